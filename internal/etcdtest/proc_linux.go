package etcdtest

import "syscall"

// sysProcAttr puts etcd in its own process group (a terminal's Ctrl-C goes to the test only) and
// has the kernel kill it when the test process dies without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
