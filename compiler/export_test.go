package compiler

// Vec is the rule vector, for the tests of package compiler_test.
type Vec = vec

func (v vec) Or(o vec) vec  { return v.or(o) }
func (v vec) And(o vec) vec { return v.and(o) }
