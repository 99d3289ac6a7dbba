//go:build !linux

package connserve

const quickAckSupported = false

func setQuickAck(uintptr) {}
