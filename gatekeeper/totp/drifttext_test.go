package totp

import "testing"

func TestDriftText(t *testing.T) {
	for steps, want := range map[int]string{
		6:   "codes match 3 min ahead",
		-4:  "codes match 2 min behind",
		1:   "codes match 30 s ahead",
		-1:  "codes match 30 s behind",
		-19: "codes match 10 min behind", // 9.5 min rounds up
	} {
		if got := DriftText(steps); got != want {
			t.Errorf("DriftText(%d) = %q, want %q", steps, got, want)
		}
	}
}
