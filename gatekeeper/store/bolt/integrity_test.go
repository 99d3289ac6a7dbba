package bolt

import (
	"bytes"
	"encoding/json"
	"errors"
	"gatekeeper/gatekeeper/store"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// editData rewrites the data of a stored authenticated value with edit,
// keeping its MAC: what someone with write access to the file but without
// the key file can do.
func editData(t *testing.T, raw []byte, edit func(data map[string]any)) []byte {
	t.Helper()
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("stored value %q: %v", raw, err)
	}
	var data map[string]any
	if err := json.Unmarshal(a.Data, &data); err != nil {
		t.Fatal(err)
	}
	edit(data)
	d, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(authenticated{Data: d, MAC: a.MAC})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fullUser gives name a record with every field set.
func fullUser(t *testing.T, s *Store, name string, fill byte) {
	t.Helper()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := s.Update(name, func(u *store.User) error {
		u.State, u.Secret, u.LastStep = store.StateActive, bytes.Repeat([]byte{fill}, 20), 58000000+uint64(fill)
		u.CreatedAt, u.PendingSince, u.EnrolledAt, u.LastLogin = t0, t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(time.Hour)
		u.RecoverySalt, u.Recovery = bytes.Repeat([]byte{fill}, 16), [][]byte{bytes.Repeat([]byte{fill}, 32), bytes.Repeat([]byte{fill + 1}, 32)}
		u.ConfirmTries, u.PendingBinding = 1, bytes.Repeat([]byte{fill}, 32)
		u.NextSecret, u.NextSince = bytes.Repeat([]byte{fill + 2}, 20), t0.Add(3*time.Hour)
		u.DriftSteps, u.DriftAt = 6, t0.Add(4*time.Hour)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTamperedRecord: any edit of a stored record without the key file makes
// it fail its integrity check: Get, List and Update refuse it with an error
// naming the user, Delete removes it.
func TestTamperedRecord(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, alice, bob []byte) []byte // returns alice's new raw record
	}{
		{"last step lowered", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["last_step"] = 1 })
		}},
		{"last step removed", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { delete(d, "last_step") })
		}},
		{"state flipped", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["state"] = "pending" })
		}},
		{"recovery hashes swapped", func(t *testing.T, alice, bob []byte) []byte {
			var b map[string]any
			_ = editData(t, bob, func(d map[string]any) { b = d })
			return editData(t, alice, func(d map[string]any) { d["recovery"], d["recovery_salt"] = b["recovery"], b["recovery_salt"] })
		}},
		{"recovery hash added", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["recovery"] = append(d["recovery"].([]any), d["recovery"].([]any)[0]) })
		}},
		{"recovery salt changed", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["recovery_salt"] = "AAAAAAAAAAAAAAAAAAAAAA==" })
		}},
		{"created at", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["created_at"] = "2020-01-01T00:00:00Z" })
		}},
		{"pending since", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["pending_since"] = "2099-01-01T00:00:00Z" })
		}},
		{"enrolled at", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { delete(d, "enrolled_at") })
		}},
		{"last login", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["last_login"] = "2026-01-02T03:04:06Z" })
		}},
		{"confirm tries reset", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { delete(d, "confirm_tries") })
		}},
		{"pending binding replaced", func(t *testing.T, alice, bob []byte) []byte {
			var b map[string]any
			_ = editData(t, bob, func(d map[string]any) { b = d })
			return editData(t, alice, func(d map[string]any) { d["pending_binding"] = b["pending_binding"] })
		}},
		{"sealed secret replaced by bob's", func(t *testing.T, alice, bob []byte) []byte {
			var b map[string]any
			_ = editData(t, bob, func(d map[string]any) { b = d })
			return editData(t, alice, func(d map[string]any) { d["sealed_secret"] = b["sealed_secret"] })
		}},
		{"next secret replaced by bob's", func(t *testing.T, alice, bob []byte) []byte {
			var b map[string]any
			_ = editData(t, bob, func(d map[string]any) { b = d })
			return editData(t, alice, func(d map[string]any) { d["sealed_next_secret"] = b["sealed_next_secret"] })
		}},
		{"next secret swapped with the current one", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) {
				d["sealed_next_secret"], d["sealed_secret"] = d["sealed_secret"], d["sealed_next_secret"]
			})
		}},
		{"next secret removed", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { delete(d, "sealed_next_secret") })
		}},
		{"next since moved", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["next_since"] = "2099-01-01T00:00:00Z" })
		}},
		{"drift steps changed", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["drift_steps"] = -6 })
		}},
		{"drift at removed", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { delete(d, "drift_at") })
		}},
		{"field added", func(t *testing.T, alice, _ []byte) []byte {
			return editData(t, alice, func(d map[string]any) { d["admin"] = true })
		}},
		{"bob's record copied to alice", func(_ *testing.T, _, bob []byte) []byte {
			return bob
		}},
		{"bob's mac", func(t *testing.T, alice, bob []byte) []byte {
			var a, b authenticated
			_ = json.Unmarshal(alice, &a)
			_ = json.Unmarshal(bob, &b)
			out, _ := json.Marshal(authenticated{Data: a.Data, MAC: b.MAC})
			return out
		}},
		{"mac removed", func(t *testing.T, alice, _ []byte) []byte {
			var a authenticated
			_ = json.Unmarshal(alice, &a)
			return []byte(`{"data":` + string(a.Data) + `}`)
		}},
		{"mac cut short", func(t *testing.T, alice, _ []byte) []byte {
			var a authenticated
			_ = json.Unmarshal(alice, &a)
			out, _ := json.Marshal(authenticated{Data: a.Data, MAC: a.MAC[:16]})
			return out
		}},
		{"schema 1 form", func(t *testing.T, alice, _ []byte) []byte {
			var a authenticated
			_ = json.Unmarshal(alice, &a)
			return a.Data
		}},
		{"one byte flipped", func(_ *testing.T, alice, _ []byte) []byte {
			out := bytes.Clone(alice)
			i := bytes.Index(out, []byte(`"last_step":`)) + len(`"last_step":`)
			out[i] ^= 0x01 // a digit becomes another digit
			return out
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			fullUser(t, s, "alice", 0x0a)
			fullUser(t, s, "bob", 0xb0)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			alice := rawGet(t, dbPath, bucketUsers, []byte("alice"))
			bob := rawGet(t, dbPath, bucketUsers, []byte("bob"))
			tampered := tt.tamper(t, alice, bob)
			if bytes.Equal(tampered, alice) {
				t.Fatal("the tamper function changed nothing")
			}
			rawPut(t, dbPath, bucketUsers, []byte("alice"), tampered)

			s = mustOpen(t, dbPath, keyPath)
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), `user "alice"`) ||
					!strings.Contains(err.Error(), "fails its integrity check") {
					t.Errorf("%s = %v, want ErrDamaged saying alice's record fails its integrity check", op, err)
				}
			}
			_, err = s.Get("alice")
			check("Get", err)
			_, err = s.List()
			check("List", err)
			called := false
			check("Update", s.Update("alice", func(*store.User) error { called = true; return nil }))
			if called {
				t.Error("Update called fn on a tampered record")
			}
			if got := rawGetOpen(t, s, "alice"); !bytes.Equal(got, tampered) {
				t.Error("the tampered record was overwritten")
			}
			// bob is untouched, and an admin reset clears alice.
			if u, err := s.Get("bob"); err != nil || u.LastStep != 58000000+0xb0 {
				t.Errorf("Get(bob) = %+v, %v", u, err)
			}
			if existed, err := s.Delete("alice"); !existed || err != nil {
				t.Fatalf("Delete = %v, %v", existed, err)
			}
			enroll(t, s, "alice", []byte("new phone"))
			if got := secretOf(t, s, "alice"); string(got) != "new phone" {
				t.Errorf("after reset secret = %q", got)
			}
		})
	}
}

// TestRecordWhitespaceAround: the MAC covers the data bytes, not the
// envelope around them: reformatting outside the data still reads.
func TestRecordWhitespaceAround(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	fullUser(t, s, "alice", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw := rawGet(t, dbPath, bucketUsers, []byte("alice"))
	var a authenticated
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	mac, _ := json.Marshal(a.MAC)
	rawPut(t, dbPath, bucketUsers, []byte("alice"), []byte("{ \"mac\" : "+string(mac)+" ,\n \"data\" : "+string(a.Data)+" }\n"))
	s = mustOpen(t, dbPath, keyPath)
	if u, err := s.Get("alice"); err != nil || u.LastStep != 58000001 {
		t.Errorf("Get = %+v, %v", u, err)
	}
}

// TestTamperedTicket: a ticket cannot be forged, extended or moved to
// another user or token by editing the file.
func TestTamperedTicket(t *testing.T) {
	const token = "alice-token"
	expires := day0.Add(time.Hour)
	tests := []struct {
		name   string
		tamper func(t *testing.T, raw []byte) (key, value []byte)
		user   string // who then tries the ticket
		token  string
		now    time.Time
	}{
		{"moved to another user", func(t *testing.T, raw []byte) ([]byte, []byte) {
			return ticketHash(token), editData(t, raw, func(d map[string]any) { d["user"] = "mallory" })
		}, "mallory", token, day0},
		{"expiry extended", func(t *testing.T, raw []byte) ([]byte, []byte) {
			return ticketHash(token), editData(t, raw, func(d map[string]any) { d["expires"] = "2099-01-01T00:00:00Z" })
		}, "alice", token, day0.Add(2 * time.Hour)},
		{"moved to another token", func(_ *testing.T, raw []byte) ([]byte, []byte) {
			return ticketHash("mallory-knows-this"), raw
		}, "alice", "mallory-knows-this", day0},
		{"forged in the schema 1 form", func(t *testing.T, _ []byte) ([]byte, []byte) {
			return ticketHash("forged"), v1TicketValue(t, "mallory", expires)
		}, "mallory", "forged", day0},
		{"forged under another key", func(t *testing.T, _ []byte) ([]byte, []byte) {
			v, err := v1Sealer(t, randBytes(t, keySize)).authenticate(bucketTickets, ticketHash("forged"), ticket{User: "mallory", Expires: expires})
			if err != nil {
				t.Fatal(err)
			}
			return ticketHash("forged"), v
		}, "mallory", "forged", day0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbPath, keyPath := paths(t)
			s, err := Open(dbPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.AddTicket("alice", token, expires); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			key, value := tt.tamper(t, rawGet(t, dbPath, bucketTickets, ticketHash(token)))
			rawPut(t, dbPath, bucketTickets, key, value)

			s = mustOpen(t, dbPath, keyPath)
			if err := s.CheckTicket(tt.user, tt.token, tt.now); !errors.Is(err, store.ErrNoTicket) {
				t.Errorf("CheckTicket = %v, want ErrNoTicket", err)
			}
			if err := s.UseTicket(tt.user, tt.token, tt.now); !errors.Is(err, store.ErrNoTicket) {
				t.Errorf("UseTicket = %v, want ErrNoTicket", err)
			}
			// UseTicket swept the tampered ticket.
			if raw := rawGetOpenBucket(t, s, bucketTickets, key); raw != nil {
				t.Errorf("tampered ticket still stored: %s", raw)
			}
		})
	}
}

// TestTicketIntegrityMessage: a stored ticket that fails the check says so
// (for the operator's log) while still being ErrNoTicket.
func TestTicketIntegrityMessage(t *testing.T) {
	dbPath, keyPath := paths(t)
	s, err := Open(dbPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddTicket("alice", "tok", day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw := rawGet(t, dbPath, bucketTickets, ticketHash("tok"))
	rawPut(t, dbPath, bucketTickets, ticketHash("tok"), editData(t, raw, func(d map[string]any) { d["expires"] = "2099-01-01T00:00:00Z" }))
	s = mustOpen(t, dbPath, keyPath)
	if err := s.CheckTicket("alice", "tok", day0); !errors.Is(err, store.ErrNoTicket) || !strings.Contains(err.Error(), "integrity check") {
		t.Errorf("CheckTicket = %v", err)
	}
}

// rawGetOpenBucket reads a raw value through the open store's handle.
func rawGetOpenBucket(t *testing.T, s *Store, bucket, key []byte) []byte {
	t.Helper()
	var v []byte
	if err := s.view(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get(key))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}
