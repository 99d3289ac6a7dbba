package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// adoptNew runs create and then, when this process runs as root, gives each of paths that
// create made to the owner and group of its directory. The service runs as its own user in a
// state directory that user owns (/var/lib/gatekeeper): an admin command run as root before the
// first start (a restore, an import, a ticket, enroll) or serve started by hand as root would
// otherwise leave root-owned 0600 files there that the service cannot open. A directory owned
// by root keeps its files root's; paths that existed before keep their owner.
func adoptNew(paths []string, create func() error) error {
	var fresh []string
	for _, p := range paths {
		if _, err := os.Lstat(p); p != "" && errors.Is(err, fs.ErrNotExist) {
			fresh = append(fresh, p)
		}
	}
	if err := create(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil
	}
	for _, p := range fresh {
		dir, err := os.Stat(filepath.Dir(p))
		if err != nil {
			continue
		}
		st, ok := dir.Sys().(*syscall.Stat_t)
		if !ok || st.Uid == 0 {
			continue
		}
		if _, err := os.Lstat(p); err != nil {
			continue // not made after all
		}
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give %s to the owner of %s: %w", p, filepath.Dir(p), err)
		}
	}
	return nil
}
