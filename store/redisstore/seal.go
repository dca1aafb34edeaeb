package redisstore

// seal encodes v as JSON and encrypts it bound to its Redis key: a value
// copied under another key (another state id, another prefix) does not open.
func (s *Store) seal(key string, v any) ([]byte, error) { return s.box.Seal([]byte(key), v) }

// open decrypts a value sealed for key and decodes it into v.
func (s *Store) open(key string, sealedValue []byte, v any) error {
	return s.box.Open([]byte(key), sealedValue, v)
}
