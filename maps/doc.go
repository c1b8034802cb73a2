// Package maps gives typed access to podwall's pinned BPF maps and applies a compiled desired
// state to them as a diff, in an order that never lets a pod see half a policy: new policy
// entries first, then their records, then the ipcache, then the endpoint flips, and only then
// the deletions of what nothing references any more.
//
// Errors: every failed map operation is returned wrapped with the map's name and the operation;
// a map that is full is reported as ErrMapFull (errors.Is) with the map's name and size, never
// as a silent partial state. After a failed Apply the applier forgets what it believed was
// present and reads the maps again before the next diff.
package maps
