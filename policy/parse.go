package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Parse parses a policy annotation (SPEC 1 and 2) into its rules, in the order written.
// An annotation whose segments are all empty has no rules (nil). Any error is a
// *SyntaxError describing the first offending word.
func Parse(annotation string) ([]Rule, error) {
	var rules []Rule
	index := 0
	for start := 0; start <= len(annotation); {
		end := strings.IndexByte(annotation[start:], ';')
		if end < 0 {
			end = len(annotation)
		} else {
			end += start
		}
		if words := splitWords(annotation, start, end); len(words) > 0 {
			index++
			r, err := parseRule(annotation, index, words)
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
		}
		start = end + 1
	}
	return rules, nil
}

// srcWord is a whitespace-separated word and its byte offset in the annotation.
type srcWord struct {
	text string
	off  int
}

func (w srcWord) end() int { return w.off + len(w.text) }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// splitWords returns the words of annotation[start:end].
func splitWords(annotation string, start, end int) []srcWord {
	var words []srcWord
	for i := start; i < end; {
		for i < end && isSpace(annotation[i]) {
			i++
		}
		j := i
		for j < end && !isSpace(annotation[j]) {
			j++
		}
		if j > i {
			words = append(words, srcWord{text: annotation[i:j], off: i})
		}
		i = j
	}
	return words
}

// stage is a place in the grammar of a rule. The grammar only moves forward through the
// stages, so what may come next follows from the last stage taken.
type stage int

const (
	stAction stage = iota
	stProto
	stType
	stCode
	stFrom
	stFromPorts
	stFromLabel
	stFromCIDR
	stTo
	stToPorts
	stToLabel
	stToCIDR
	numStages
)

// stageWords are the keywords of each stage, as an error lists them.
var stageWords = [numStages][]string{
	stAction:    {"allow", "deny"},
	stProto:     {"tcp", "udp", "icmp", "icmpv6"},
	stType:      {"type"},
	stCode:      {"code"},
	stFrom:      {"from"},
	stFromPorts: {"ports"},
	stFromLabel: {"label"},
	stFromCIDR:  {"cidr"},
	stTo:        {"to"},
	stToPorts:   {"ports"},
	stToLabel:   {"label"},
	stToCIDR:    {"cidr"},
}

var protocolKeywords = map[string]Protocol{
	"tcp":    ProtoTCP,
	"udp":    ProtoUDP,
	"icmp":   ProtoICMP,
	"icmpv6": ProtoICMPv6,
}

// What a value must look like, as errors say it.
const (
	expectPort  = "a port 0..65535 or a range A:B with A <= B"
	expectLabel = "KEY=VALUE, each of [A-Za-z0-9/._-]+"
	expectCIDR  = "an IPv4 or IPv6 prefix or address"
	expectType  = "an ICMP type 0..254"
	expectCode  = "an ICMP code 0..255"
)

const (
	portMax     = 65535
	icmpTypeMax = 254 // SPEC 2: iptables, which Calico compiled rules to, reads type 255 as "any"
	icmpCodeMax = 255
)

// ruleParser parses the words of one rule.
type ruleParser struct {
	index int
	words []srcWord
	pos   int
	last  stage
	seen  [numStages]bool
	rule  Rule
}

func parseRule(annotation string, index int, words []srcWord) (Rule, error) {
	p := &ruleParser{index: index, words: words}
	first, last := words[0], words[len(words)-1]
	p.rule.Index = index
	p.rule.Offset = first.off
	p.rule.Text = annotation[first.off:last.end()]

	switch first.text {
	case "allow":
		p.rule.Action = Allow
	case "deny":
		p.rule.Action = Deny
	default:
		return Rule{}, p.errorAt(first, `"allow" or "deny"`, caseHint(first.text))
	}
	p.seen[stAction] = true
	for p.pos = 1; p.pos < len(p.words); p.pos++ {
		w := p.words[p.pos]
		st, ok := p.stageOf(w.text)
		if !ok || !p.allowed(st) {
			return Rule{}, p.unexpected(w, st, ok)
		}
		p.seen[st] = true
		p.last = st
		if err := p.take(st, w); err != nil {
			return Rule{}, err
		}
	}
	return p.rule, nil
}

// take records keyword w of stage st and the value that follows it, if it has one.
func (p *ruleParser) take(st stage, w srcWord) error {
	switch st {
	case stProto:
		p.rule.Protocol = protocolKeywords[w.text]
	case stType:
		v, err := p.number(icmpTypeMax, expectType)
		if err != nil {
			return err
		}
		p.rule.HasType, p.rule.Type = true, uint8(v)
	case stCode:
		v, err := p.number(icmpCodeMax, expectCode)
		if err != nil {
			return err
		}
		p.rule.HasCode, p.rule.Code = true, uint8(v)
	case stFromPorts, stToPorts:
		v, err := p.value(expectPort)
		if err != nil {
			return err
		}
		ports, err := p.ports(v)
		if err != nil {
			return err
		}
		p.clause(st).Ports = ports
	case stFromLabel, stToLabel:
		v, err := p.value(expectLabel)
		if err != nil {
			return err
		}
		l, err := p.label(v)
		if err != nil {
			return err
		}
		p.clause(st).Label = &l
	case stFromCIDR, stToCIDR:
		v, err := p.value(expectCIDR)
		if err != nil {
			return err
		}
		c, err := p.cidr(v)
		if err != nil {
			return err
		}
		p.clause(st).CIDR = &c
	}
	return nil
}

func (p *ruleParser) clause(st stage) *Clause {
	if st >= stTo {
		return &p.rule.To
	}
	return &p.rule.From
}

// stageOf returns the stage keyword s would take; ports, label and cidr belong to the
// clause the rule is in (from, unless "to" was taken).
func (p *ruleParser) stageOf(s string) (stage, bool) {
	inTo := p.last >= stTo
	switch s {
	case "allow", "deny":
		return stAction, true
	case "tcp", "udp", "icmp", "icmpv6":
		return stProto, true
	case "type":
		return stType, true
	case "code":
		return stCode, true
	case "from":
		return stFrom, true
	case "to":
		return stTo, true
	case "ports":
		if inTo {
			return stToPorts, true
		}
		return stFromPorts, true
	case "label":
		if inTo {
			return stToLabel, true
		}
		return stFromLabel, true
	case "cidr":
		if inTo {
			return stToCIDR, true
		}
		return stFromCIDR, true
	}
	return 0, false
}

func (p *ruleParser) isICMP() bool {
	return p.rule.Protocol == ProtoICMP || p.rule.Protocol == ProtoICMPv6
}

func (p *ruleParser) hasPorts() bool {
	return p.rule.Protocol == ProtoTCP || p.rule.Protocol == ProtoUDP
}

// allowed says whether stage st may come right after the last stage taken.
func (p *ruleParser) allowed(st stage) bool {
	switch st {
	case stAction:
		return false
	case stProto:
		return p.last == stAction
	case stType:
		return p.last < stType && p.isICMP()
	case stCode:
		return p.last == stType
	case stFrom, stTo:
		return p.last < st
	case stFromPorts:
		return p.last == stFrom && p.hasPorts()
	case stToPorts:
		return p.last == stTo && p.hasPorts()
	case stFromLabel, stFromCIDR:
		return p.last >= stFrom && p.last < st
	case stToLabel, stToCIDR:
		return p.last >= stTo && p.last < st
	}
	return false
}

// expected lists what may come after the last stage taken, in grammar order.
func (p *ruleParser) expected() string {
	var names []string
	for st := stProto; st < numStages; st++ {
		if p.allowed(st) {
			for _, w := range stageWords[st] {
				names = append(names, strconv.Quote(w))
			}
		}
	}
	if len(names) == 0 {
		return "end of rule"
	}
	return strings.Join(names, ", ") + " or end of rule"
}

// unexpected is the error for word w where it stands; st is its stage when isKeyword.
func (p *ruleParser) unexpected(w srcWord, st stage, isKeyword bool) error {
	hint := caseHint(w.text)
	if isKeyword {
		hint = p.orderHint(w.text, st)
	}
	return p.errorAt(w, p.expected(), hint)
}

// orderHint says why keyword s, of stage st, cannot stand where it is.
func (p *ruleParser) orderHint(s string, st stage) string {
	q := strconv.Quote(s)
	switch st {
	case stAction:
		return `rules are separated by ";"`
	case stProto:
		if p.seen[stProto] {
			return "one protocol per rule"
		}
		return `the protocol comes right after "allow" or "deny"`
	case stType, stCode:
		switch {
		case !p.isICMP():
			return q + ` needs "icmp" or "icmpv6"`
		case p.seen[st]:
			return q + " at most once"
		case st == stCode && !p.seen[stType]:
			return `"code" needs a "type" before it`
		case st == stCode:
			return `"code" comes right after "type"`
		}
		return `"type" comes before "from" and "to"`
	case stFrom:
		if p.seen[stFrom] {
			return `"from" at most once`
		}
		return `"from" comes before "to"`
	case stTo:
		return `"to" at most once`
	}
	// A clause keyword: ports, label or cidr.
	switch {
	case (st == stFromPorts || st == stToPorts) && !p.hasPorts():
		return `"ports" needs "tcp" or "udp"`
	case p.last < stFrom:
		return q + ` goes after "from" or "to"`
	case p.seen[st] && (st == stFromPorts || st == stToPorts):
		return `"ports" at most once per clause: list the ports comma-separated`
	case p.seen[st]:
		return "one " + q + " per clause"
	case st == stFromPorts || st == stToPorts:
		return `"ports" comes before "label" and "cidr"`
	}
	return `"label" comes before "cidr"`
}

// caseHint catches keywords written in upper or mixed case.
func caseHint(s string) string {
	lower := strings.ToLower(s)
	if lower == s {
		return ""
	}
	for _, words := range stageWords {
		for _, w := range words {
			if w == lower {
				return "keywords are lowercase"
			}
		}
	}
	return ""
}

func (p *ruleParser) errorAt(w srcWord, expected, hint string) error {
	return &SyntaxError{Rule: p.index, Offset: w.off, Word: w.text, Expected: expected, Hint: hint}
}

// value moves to the word after a keyword that takes one; a rule that ends there is an error.
func (p *ruleParser) value(expected string) (srcWord, error) {
	if p.pos+1 == len(p.words) {
		end := p.words[p.pos].end()
		return srcWord{}, &SyntaxError{Rule: p.index, Offset: end, Expected: expected}
	}
	p.pos++
	return p.words[p.pos], nil
}

// number reads the value of type or code.
func (p *ruleParser) number(max int, expected string) (int, error) {
	w, err := p.value(expected)
	if err != nil {
		return 0, err
	}
	v, ok := parseNumber(w.text, max)
	if !ok {
		return 0, p.errorAt(w, expected, signHint(w.text))
	}
	return v, nil
}

// parseNumber reads plain decimal digits (leading zeros allowed, no sign) up to max. It
// stops as soon as the value passes max, so no length of digits can overflow.
func parseNumber(s string, max int) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

func signHint(s string) string {
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		return "numbers have no sign"
	}
	return ""
}

// ports reads a ports list. An error names the offending entry at its own offset, or the
// whole list when an entry is empty (there is no word to name).
func (p *ruleParser) ports(w srcWord) ([]PortRange, error) {
	var ports []PortRange
	off := w.off
	for entry := range strings.SplitSeq(w.text, ",") {
		e := srcWord{text: entry, off: off}
		off += len(entry) + 1
		if entry == "" {
			return nil, p.errorAt(w, expectPort, "empty entry: ports are comma-separated, without spaces")
		}
		first, last, isRange := strings.Cut(entry, ":")
		a, okA := parseNumber(first, portMax)
		b, okB := a, okA
		if isRange {
			b, okB = parseNumber(last, portMax)
		}
		if !okA || !okB || a > b {
			return nil, p.errorAt(e, expectPort, portHint(entry))
		}
		ports = append(ports, PortRange{First: uint16(a), Last: uint16(b)})
	}
	return ports, nil
}

func portHint(entry string) string {
	if h := signHint(entry); h != "" {
		return h
	}
	if strings.Contains(entry, "-") {
		return "a range is written A:B"
	}
	return ""
}

// label reads KEY=VALUE.
func (p *ruleParser) label(w srcWord) (Label, error) {
	key, value, ok := strings.Cut(w.text, "=")
	switch {
	case !ok || key == "" || value == "":
		return Label{}, p.errorAt(w, expectLabel, "")
	case strings.Contains(value, "="):
		return Label{}, p.errorAt(w, expectLabel, `exactly one "="`)
	}
	for _, r := range key + value {
		if !isLabelChar(r) {
			return Label{}, p.errorAt(w, expectLabel, strconv.Quote(string(r))+" is not allowed")
		}
	}
	return Label{Key: key, Value: value}, nil
}

func isLabelChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '/' || r == '.' || r == '_' || r == '-'
}

// cidr reads a prefix or a bare address and masks its host bits. netip does the parsing;
// the checks around it only find the hint for forms people write by mistake.
func (p *ruleParser) cidr(w srcWord) (netip.Prefix, error) {
	fail := func(hint string) (netip.Prefix, error) {
		return netip.Prefix{}, p.errorAt(w, expectCIDR, hint)
	}
	addrText, bitsText, hasBits := strings.Cut(w.text, "/")
	if strings.Contains(addrText, "%") {
		return fail("zones are not allowed")
	}
	addr, err := netip.ParseAddr(addrText)
	if err != nil {
		if isPartialIPv4(addrText) {
			return fail("an IPv4 address has four parts")
		}
		return fail("")
	}
	// An IPv4-mapped address never appears in a packet the data path judges (IPv4 traffic is
	// IPv4 there), so a rule naming one would silently match nothing.
	if addr.Is4In6() {
		return fail("write an IPv4-mapped address as IPv4")
	}
	if !hasBits {
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(w.text)
	if err != nil {
		switch bits, ok := parseNumber(bitsText, 1<<20); {
		case strings.Contains(bitsText, "."):
			return fail("netmask form: write a prefix length")
		case ok && bits > addr.BitLen():
			return fail(fmt.Sprintf("the prefix length is 0..%d", addr.BitLen()))
		case ok:
			return fail("a prefix length has no leading zeros")
		}
		return fail("")
	}
	return prefix.Masked(), nil
}

// isPartialIPv4 matches the shortened IPv4 forms inet_aton accepts, such as 10.1.
func isPartialIPv4(s string) bool {
	if s == "" || strings.Count(s, ".") >= 3 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}
