package bolt

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockHolder returns the pid holding a flock on path according to
// /proc/locks, or 0 when it cannot tell.
func lockHolder(path string) int {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	dev := uint64(st.Dev) // Dev is uint32 on some Linux ports
	return parseLocks(f, devMajor(dev), devMinor(dev), uint64(st.Ino))
}

// devMajor and devMinor split a Linux dev_t (glibc's gnu_dev_major/minor).
func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff) }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^uint64(0xff) }

// parseLocks finds the holder of a FLOCK lock on the inode in /proc/locks
// lines such as
//
//	1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
//
// where the device is "major:minor" in hex. Waiters ("->") are skipped. Some
// file systems (btrfs subvolumes) report a different device there than
// stat does, so a lock on the same inode number is used when it is the only
// one.
func parseLocks(r io.Reader, major, minor, ino uint64) int {
	sc := bufio.NewScanner(r)
	inoOnly, inoMatches := 0, 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" {
			continue // also skips "->" waiters
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 {
			continue
		}
		id := strings.Split(f[5], ":")
		if len(id) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(id[0], 16, 32)
		mnr, err2 := strconv.ParseUint(id[1], 16, 32)
		in, err3 := strconv.ParseUint(id[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || in != ino {
			continue
		}
		if maj == major && mnr == minor {
			return pid
		}
		if pid != inoOnly {
			inoOnly = pid
			inoMatches++
		}
	}
	if inoMatches == 1 {
		return inoOnly
	}
	return 0
}
