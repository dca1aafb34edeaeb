package embedded

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Record keys are the length-prefixed parts of the identity: uvarint(len) then
// the bytes, for account, vendor and user in turn. Length prefixes form a
// prefix code, so no choice of names can make two identities share a key, and
// the encoding of an account is never a prefix of another account's (so a
// cursor scan for "acme" cannot reach "acme2" or "acme/x").

func appendPart(b []byte, part string) []byte {
	b = binary.AppendUvarint(b, uint64(len(part)))
	return append(b, part...)
}

func connectionKey(k broker.Key) []byte {
	return appendPart(appendPart(appendPart(nil, k.Account), k.Vendor), k.UserID)
}

// listPrefix selects the connections of an account, or of one of its vendors.
func listPrefix(account, vendor string) []byte {
	p := appendPart(nil, account)
	if vendor != "" {
		p = appendPart(p, vendor)
	}
	return p
}

func clientKey(account, vendor string) []byte {
	return appendPart(appendPart(nil, account), vendor)
}

// stateKey hashes the state id: the id is the callback's only credential, so
// the file must not hold it in the clear. Ids are random, so a plain hash is
// enough to make the stored key useless to a reader of the file.
func stateKey(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

func validKey(k broker.Key) error {
	if k.Account == "" || k.Vendor == "" {
		return errors.New("account and vendor are required")
	}
	return nil
}

// describe names a connection in errors and logs; identities are not secrets.
func describe(k broker.Key) string {
	if k.UserID == "" {
		return fmt.Sprintf("%q/%q", k.Account, k.Vendor)
	}
	return fmt.Sprintf("%q/%q user %q", k.Account, k.Vendor, k.UserID)
}
