// Package k8s is where the agent learns what runs in the cluster and where it reports back.
//
// It reduces pods and namespaces to what policy needs (Pod, Snapshot) and offers two sources
// of them with one contract: Cluster watches the API with client-go informers whose transform
// keeps only those fields, so memory grows with the number of pods and not with their specs;
// File reads a YAML file of Pods and Namespaces (standalone mode) and follows its changes.
// Both call their notify function when what they hold changed, after they first hold a whole
// view (the informers synced, the file parsed), and hand out a Snapshot on request. Recorder
// turns the agent's warnings into Kubernetes Events.
//
// Error contract: a source never forgets what it last held. A watch failure that client-go
// reports (Cluster; a watch that merely ends is watched anew without one) or a file that
// cannot be read or parsed (File) is passed to notify as an error, and the last good Snapshot
// stays what Snapshot returns, so a broken source never unguards a pod. Errors
// of ParseFile name the document and item; ErrNotSynced is returned by Snapshot before the
// source first held a whole view.
package k8s
