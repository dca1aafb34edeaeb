package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint signs c as an HS256 JWT valid from now for ttl: the `broker token`
// development command and tests use it. The token carries no iss or aud.
func Mint(secret []byte, c Claims, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case len(secret) < minHS256SecretLen:
		return "", fmt.Errorf("auth: mint: HS256 secret too short: at least %d bytes are required", minHS256SecretLen)
	case c.Account == "" || c.Subject == "":
		return "", errors.New("auth: mint: account and subject are required")
	case ttl <= 0:
		return "", errors.New("auth: mint: ttl must be positive")
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Account: c.Account,
		Roles:   c.Roles,
	})
	s, err := tok.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}
