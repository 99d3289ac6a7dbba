//go:build !linux

package store

// lockHolder cannot find the lock holder without /proc/locks.
func lockHolder(string) int { return 0 }
