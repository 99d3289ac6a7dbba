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
// create made to the owner and group of its directory, also when create failed after making
// some (a new host key, then a refused CA file: left root's now, it would never be given
// over later, as it would no longer be new). The service runs as its own user in a state
// directory that user owns (/var/lib/gatekeeper): an admin command run as root before the
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
	err := create()
	if os.Geteuid() != 0 {
		return err
	}
	for _, p := range fresh {
		if cerr := adopt(p); cerr != nil && err == nil {
			err = fmt.Errorf("give %s to the owner of %s: %w", p, filepath.Dir(p), cerr)
		}
	}
	return err
}

// adopt gives path, if it is there, to the owner of its directory unless that is root (its
// errors are wrapped by adoptNew, which names the path and directory). The
// file is opened without following a link and changed through its descriptor, and only while
// it is a regular file with one link: the directory is the other user's, who could otherwise
// swap the name for a link to a file of root's between a check and the change.
func adopt(path string) error {
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return nil
	}
	d, ok := dir.Sys().(*syscall.Stat_t)
	if !ok || d.Uid == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // not made after all
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.Mode().IsRegular() || st.Nlink != 1 {
		return errors.New("not a regular file with one link; left as it is")
	}
	return f.Chown(int(d.Uid), int(d.Gid))
}
