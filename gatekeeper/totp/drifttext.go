package totp

import (
	"fmt"
	"time"
)

// DriftText says, for logs and admins, how far off a phone's clock is when its codes match steps
// time steps away from now: "codes match 3 min ahead", "codes match 30 s behind".
func DriftText(steps int) string {
	dir := "ahead"
	if steps < 0 {
		dir, steps = "behind", -steps
	}
	d := time.Duration(steps) * Period
	if d < time.Minute {
		return fmt.Sprintf("codes match %d s %s", int(d.Seconds()), dir)
	}
	return fmt.Sprintf("codes match %d min %s", int(d.Round(time.Minute).Minutes()), dir)
}
