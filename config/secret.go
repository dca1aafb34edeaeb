package config

import "github.com/tokenbroker/tokenbroker/config/setting"

// Secret is setting.Secret: a value printed, encoded or logged as
// "<secret>", read only through Reveal.
type Secret = setting.Secret

// redacted is what a Secret prints as.
const redacted = setting.Redacted
