// Package policy is the pod-annotation policy language of Calico's original Kubernetes
// plugin, and nothing of how podwall enforces it: Parse reads an annotation into Rules (SPEC.md
// sections 1 and 2; docs/POLICY.md for users), PolicyAnnotation picks the annotation a pod's
// policy is read from, the tag functions name pods and labels (SPEC 5), and FormatRule and
// MarshalRulesJSON print rules (SPEC 7). It imports nothing of podwall: the compiler, the
// commands and the tests build on it.
//
// # Error contract
//
// Parse returns a *SyntaxError (use errors.As) for the first word that breaks the grammar;
// the annotation is then rejected whole. Its message is part of podwall's interface, quoted
// in Events and logs, and reads
//
//	rule R, offset O (WORD): expected WHAT[ (HINT)]
//
// where:
//
//   - R counts rules from 1, skipping empty segments. O is a byte offset into the whole
//     annotation. WORD is the offending word, Go-quoted and cut to 64 bytes with "...".
//   - When the rule ends where a value was needed, WORD is `end of rule` and O is the offset
//     just past the rule's last word: `rule 1, offset 18 (end of rule): expected a port
//     0..65535 or a range A:B with A <= B` for "allow tcp to ports".
//   - Where a keyword was needed, WHAT lists every keyword that may stand there, in grammar
//     order, then `end of rule` (always allowed there):
//     `expected "ports", "label", "cidr", "to" or end of rule`. A keyword that is valid
//     elsewhere gets a HINT saying why not here, e.g. `("ports" needs "tcp" or "udp")`,
//     `("label" comes before "cidr")`, `("code" needs a "type" before it)`, and a keyword
//     written in capitals gets `(keywords are lowercase)`.
//   - Where a value was needed, WHAT describes it: `a port 0..65535 or a range A:B with
//     A <= B`, `KEY=VALUE, each of [A-Za-z0-9/._-]+`, `an IPv4 or IPv6 prefix or address`,
//     `an ICMP type 0..254`, `an ICMP code 0..255`. A bad entry of a ports list is named
//     alone at its own offset; an empty entry ("80,,443", or "80," before a space) names
//     the whole list. Hints name common mistakes: a sign (`+80`), `80-90` for a range, a
//     netmask (`/255.0.0.0`), a partial IPv4 address (`10.1`), a zone (`fe80::1%eth0`), a
//     prefix length out of range or with leading zeros.
//
// # Decisions SPEC leaves open
//
//   - An IPv4-mapped IPv6 address (::ffff:1.2.3.4, with or without a prefix length) is an
//     error: IPv4 traffic is IPv4 in the data path, so such a rule would silently match
//     nothing. Write the IPv4 form.
//   - A prefix length follows netip: 0..32 or 0..128, no sign, no leading zeros. The leading
//     zeros SPEC allows are for ports, type and code.
//   - Only space, tab, CR and LF separate words; any other byte (a vertical tab, a non-ASCII
//     space) is part of a word.
//   - Escape replaces each rune outside [A-Za-z0-9._-] with one "_" (so "é" gives "_"), and
//     each byte of invalid UTF-8 with one "_".
//   - MarshalRulesJSON prints `to label K=V` as dst_tag LabelTag(namespace, K=V), the tag the
//     pod itself must carry, from the same namespace as src_tag.
package policy
