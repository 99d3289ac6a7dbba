package main

import (
	"strings"
	"testing"
)

// TestEndUserEverywhere: a reset asks every listener to end the user's sessions and reports
// the sum.
func TestEndUserEverywhere(t *testing.T) {
	var asked []string
	ender := func(name string, n int) func(string) int {
		return func(user string) int {
			asked = append(asked, name+":"+user)
			return n
		}
	}
	end := endUserEverywhere(ender("front door", 2), ender("portal", 1), ender("ssh link", 0))
	if got := end("alice"); got != 3 {
		t.Errorf("ended %d, want 3", got)
	}
	if want := "front door:alice portal:alice ssh link:alice"; strings.Join(asked, " ") != want {
		t.Errorf("asked %q, want %q", asked, want)
	}
}
