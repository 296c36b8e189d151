package redisserver

import "syscall"

// sysProcAttr kills the server when the process that started it dies
// (a test binary killed at its timeout leaves no redis-server behind).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
