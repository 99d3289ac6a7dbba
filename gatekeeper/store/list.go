package store

import (
	"errors"
	"fmt"
	"strings"
)

// DamagedRecord is a stored user record that List could not return: Name is
// the key it is stored under (which may not even be a valid user name, for a
// record put there by hand) and Err why (matching ErrDamaged).
type DamagedRecord struct {
	Name string
	Err  error
}

// DamagedError is List's error when some records are damaged: List returns
// every other user with it, so that one bad record does not hide everyone
// else. It matches ErrDamaged; Delete (an admin reset) removes each record it
// names.
type DamagedError struct {
	Records []DamagedRecord
}

// Error is the one damaged record's message, or all of them.
func (e *DamagedError) Error() string {
	if len(e.Records) == 1 {
		return e.Records[0].Err.Error()
	}
	msgs := make([]string, len(e.Records))
	for i, r := range e.Records {
		msgs[i] = r.Err.Error()
	}
	return fmt.Sprintf("%d damaged user records: %s", len(e.Records), strings.Join(msgs, "; "))
}

// Is makes a DamagedError match ErrDamaged.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// Lister collects what List reads: a backend calls Add for every stored
// record, in name order, and returns Result.
type Lister struct {
	Codec   *Codec
	users   []User
	damaged []DamagedRecord
}

// Add decodes the record stored under key name. One that does not decode, or
// is stored under a name that is not a valid user name (gatekeeper never
// writes one: it was put there by hand), is set aside as damaged.
func (l *Lister) Add(name string, raw []byte) {
	if err := CheckName(name); err != nil {
		l.damaged = append(l.damaged, DamagedRecord{Name: name, Err: Damaged(fmt.Errorf(
			"a record is stored under %q, which is not a valid user name (%w): gatekeeper never writes one, "+
				"it was put there by hand; deleting it (admin reset) removes it", name, err))})
		return
	}
	u, err := l.Codec.DecodeUser(name, raw)
	if err != nil {
		if !errors.Is(err, ErrDamaged) {
			err = Damaged(err)
		}
		l.damaged = append(l.damaged, DamagedRecord{Name: name, Err: err})
		return
	}
	l.users = append(l.users, u)
}

// Result is List's answer: the users that decoded (never nil) and, when some
// did not, a *DamagedError naming them.
func (l *Lister) Result() ([]User, error) {
	users := l.users
	if users == nil {
		users = []User{} // "no users" encodes as [], not null
	}
	if len(l.damaged) > 0 {
		return users, &DamagedError{Records: l.damaged}
	}
	return users, nil
}

// CheckDeleteName is Delete's check of name: a valid user name passes; an
// invalid one passes only when exists reports that a record is stored under
// it (put there by hand: List names it as damaged, and an admin reset must be
// able to remove it), and is otherwise the error of CheckName.
func CheckDeleteName(name string, exists bool) error {
	err := CheckName(name)
	if err != nil && exists {
		return nil
	}
	return err
}
