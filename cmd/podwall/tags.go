package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/policy"
)

func newTagsCmd(d deps) *cobra.Command {
	var filename string
	cmd := &cobra.Command{
		Use:   "tags -f POD.yaml",
		Short: "Print a pod's tags",
		Long: `Print the tags of a pod, one a line: its namespace tag, its pod tag, then one tag per
label, sorted by label key. A "from label K=V" rule of a pod in the same namespace matches
the sources that carry the tag of K=V.`,
		Example: `  podwall tags -f pod.yaml
  kubectl get pod web-0 -o json | podwall tags -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pod, err := readPod(d, filename)
			if err != nil {
				return err
			}
			m := pod.Metadata
			tags := policy.PodTags(m.Namespace, m.Name, m.Labels)
			_, err = fmt.Fprintln(d.stdout, strings.Join(tags, "\n"))
			return err
		},
	}
	cmd.Flags().StringVarP(&filename, "filename", "f", "", `the Pod manifest, YAML or JSON ("-": stdin)`)
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}
