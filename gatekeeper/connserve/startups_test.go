package connserve

import "testing"

func TestStartups(t *testing.T) {
	s := NewStartups(2)
	r1, ok1 := s.Enter()
	r2, ok2 := s.Enter()
	if !ok1 || !ok2 {
		t.Fatal("the first two connections were turned away")
	}
	if _, ok := s.Enter(); ok {
		t.Fatal("a third connection got a slot past the cap of 2")
	}
	r1()
	r1() // a second release must not free another connection's slot
	r3, ok3 := s.Enter()
	if !ok3 {
		t.Fatal("a released slot was not given out again")
	}
	if _, ok := s.Enter(); ok {
		t.Fatal("a double release freed two slots")
	}
	r2()
	r3()
	if s.Max() != 2 {
		t.Errorf("Max() = %d, want 2", s.Max())
	}
}
