//go:build !linux

package haproxytest

import "syscall"

// sysProcAttr puts haproxy in its own process group (a terminal's Ctrl-C goes to the test only).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
