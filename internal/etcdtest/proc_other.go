//go:build !linux

package etcdtest

import "syscall"

// sysProcAttr puts etcd in its own process group (a terminal's Ctrl-C goes to the test only).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
