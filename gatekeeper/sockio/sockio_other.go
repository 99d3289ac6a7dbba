//go:build !linux

package sockio

import "net"

func wrap(nc net.Conn) net.Conn { return nc }
