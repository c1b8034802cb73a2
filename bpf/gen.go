// Package bpf holds podwall's data path: the C programs, the header that defines every map key
// and value once, and the Go bindings bpf2go generates from them (committed, so building the
// Go code needs no clang).
package bpf

//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "${BPF_CFLAGS}" -target bpfel -type endpoint -type endpoint_entry -type policy -type rule_vec -type ip_addr -type ident_key -type cidr_key -type port_key -type icmp_key -type ct_head -type ct_key4 -type ct_key6 -type ct_key -type ct_entry -type rule_count -type frag_key -type frag_entry -type ct_count -type ct_gc_run -type event -type reason -type hook -type limits -type family -type proto_class -type port_dir -type reserved_identity -type endpoint_mode -type endpoint_flag -type policy_flag -type icmp_code -type ct_flag -type flush_scope -type verdict Podwall podwall.c -- -I.
