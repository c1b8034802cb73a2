package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

func newPolicyCmd(d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check policy annotations without a cluster",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPolicyParseCmd(d))
	return cmd
}

type parseOptions struct {
	namespace string
	output    string
	filename  string
	legacy    bool
	budget    int
}

func newPolicyParseCmd(d deps) *cobra.Command {
	var o parseOptions
	cmd := &cobra.Command{
		Use:   "parse {ANNOTATION | -f POD.yaml}",
		Short: "Parse a policy annotation and print its rules",
		Long: `Parse a policy annotation and print its rules, or the first syntax error.

ANNOTATION is the value of the projectcalico.org/policy annotation; "-" reads it from
stdin. With -f, the annotation and the namespace come from a Pod manifest (YAML or JSON).

-o text prints one rule a line in canonical form, each ending with ";": line N is rule N,
and the whole output is an annotation with the same rules. -o json prints a JSON array of
Calico profile rules; label constraints become tags of the namespace.

An invalid annotation, or one the agent would isolate for its size (more than 1024 rules,
or more entries in a map than --policy-budget), prints its error on stderr and exits with
status 1, printing nothing on stdout: the agent's message for the same annotation. An annotation with no rules prints a note on stderr (and [] with -o json).`,
		Example: `  podwall policy parse 'allow tcp from label role=backend; allow tcp to ports 443'
  podwall policy parse -n production -o json 'allow from label role=backend'
  kubectl get pod web-0 -o yaml | podwall policy parse -f -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(d, cmd.Flags().Changed("namespace"), args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "default", "namespace of the annotated pod: the namespace of the tags of label rules")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	f.StringVarP(&o.filename, "filename", "f", "", `read the annotation and the namespace from this Pod manifest ("-": stdin)`)
	f.IntVar(&o.budget, "policy-budget", compiler.DefaultPolicyBudget, "the agent's --policy-budget: the most entries one policy may have in any one classifier map (0: no budget)")
	f.BoolVar(&o.legacy, "legacy-policy-key", true, `with -f, read the legacy "policy" annotation when "`+policy.AnnotationKey+`" is absent`)
	return cmd
}

func (o parseOptions) run(d deps, namespaceSet bool, args []string) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("unknown output format %q: want text or json", o.output)
	}
	var annotation, namespace string
	switch {
	case o.filename != "" && len(args) > 0:
		return errors.New("give an ANNOTATION or -f POD.yaml, not both")
	case o.filename != "" && namespaceSet:
		return errors.New("-n does not go with -f: the namespace comes from the manifest")
	case o.filename != "":
		pod, err := readPod(d, o.filename)
		if err != nil {
			return err
		}
		value, key, ok := policy.PolicyAnnotation(pod.Metadata.Annotations, o.legacy)
		if !ok {
			fmt.Fprintln(d.stderr, "podwall:", noPolicyNote(pod, o.legacy))
			return nil
		}
		rules, err := policy.Parse(value)
		if err == nil {
			err = compiler.CheckPolicy(pod.Metadata.Namespace, rules, o.budget)
		}
		if err != nil {
			return fmt.Errorf("annotation %s of pod %s: %w", key, pod.name(), err)
		}
		return printRules(d, rules, pod.Metadata.Namespace, o.output)
	case len(args) != 1:
		return fmt.Errorf("want one ANNOTATION (\"-\" reads stdin) or -f POD.yaml, got %d arguments", len(args))
	case o.namespace == "":
		return errors.New("-n: empty namespace")
	case args[0] == "-":
		b, err := io.ReadAll(d.stdin)
		if err != nil {
			return fmt.Errorf("read annotation from stdin: %w", err)
		}
		annotation, namespace = string(b), o.namespace
	default:
		annotation, namespace = args[0], o.namespace
	}
	rules, err := policy.Parse(annotation)
	if err != nil {
		return err
	}
	if err := compiler.CheckPolicy(namespace, rules, o.budget); err != nil {
		return err
	}
	return printRules(d, rules, namespace, o.output)
}

// printRules prints rules in format output; the whole output is built first, so a failure
// prints nothing on stdout.
func printRules(d deps, rules []policy.Rule, namespace, output string) error {
	var out bytes.Buffer
	if output == "json" {
		b, err := policy.MarshalRulesJSON(rules, namespace)
		if err != nil {
			return err
		}
		out.Write(b)
		out.WriteByte('\n')
	} else {
		for _, r := range rules {
			out.WriteString(policy.FormatRule(r) + ";\n")
		}
	}
	if len(rules) == 0 {
		fmt.Fprintln(d.stderr, "podwall: the annotation has no rules: it isolates the pod (only replies, the node and neighbour discovery reach it)")
	}
	_, err := d.stdout.Write(out.Bytes())
	return err
}

// noPolicyNote says what applies to a pod without a policy annotation (SPEC 4).
func noPolicyNote(pod podManifest, legacy bool) string {
	what := "has no policy annotation"
	if _, ok := pod.Metadata.Annotations[policy.LegacyAnnotationKey]; ok && !legacy {
		what = fmt.Sprintf("has no %q annotation, and its legacy %q annotation is not read (--legacy-policy-key=false)",
			policy.AnnotationKey, policy.LegacyAnnotationKey)
	}
	return fmt.Sprintf("pod %s %s: the agent's --default-policy applies (%q unless set: only pods of namespace %s may connect)",
		pod.name(), what, "namespace", pod.Metadata.Namespace)
}

// podManifest is the part of a Pod manifest podwall reads.
type podManifest struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

func (p podManifest) name() string { return p.Metadata.Namespace + "/" + p.Metadata.Name }

// readPod reads a Pod manifest, YAML or JSON, from path ("-": stdin). The namespace
// defaults to "default", as kubectl's does.
func readPod(d deps, path string) (podManifest, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(d.stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return podManifest{}, fmt.Errorf("read pod manifest: %w", err)
	}
	var pod podManifest
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return podManifest{}, fmt.Errorf("parse pod manifest %s: %w", path, err)
	}
	// yaml.Unmarshal reads the first document only; a second one would be ignored silently.
	docs, err := countDocuments(b)
	if err != nil {
		return podManifest{}, fmt.Errorf("parse pod manifest %s: %w", path, err)
	}
	switch {
	case docs > 1:
		return podManifest{}, fmt.Errorf("pod manifest %s: %d documents, want one Pod", path, docs)
	case pod.Kind != "Pod":
		return podManifest{}, fmt.Errorf("pod manifest %s: kind is %q, want \"Pod\"", path, pod.Kind)
	case pod.Metadata.Name == "":
		return podManifest{}, fmt.Errorf("pod manifest %s: no metadata.name", path)
	}
	if pod.Metadata.Namespace == "" {
		pod.Metadata.Namespace = "default"
	}
	return pod, nil
}

// countDocuments counts the non-empty documents of a YAML stream.
func countDocuments(b []byte) (int, error) {
	dec := yamlv2.NewDecoder(bytes.NewReader(b))
	n := 0
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		if doc != nil {
			n++
		}
	}
}
