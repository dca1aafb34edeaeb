package vaultstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

const (
	// DefaultTimeout bounds one Vault request (all its retries included) when
	// the caller's context has no earlier deadline. The library's 60 s would
	// let a hung Vault hold a refresh, and its lease, for a minute; a healthy
	// Vault answers KV calls in milliseconds.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxRetries is how often a request is retried on a network error,
	// 5xx, 412 or 429 (the library's policy), after the first try.
	DefaultMaxRetries = 2

	// The library waits 1 to 1.5 s between tries; a standby forwarding hiccup
	// or a leader election is shorter than that, and three tries must fit in
	// DefaultTimeout with room to spare.
	minRetryWait = 250 * time.Millisecond
	maxRetryWait = time.Second

	// DefaultServiceAccountTokenPath is where Kubernetes mounts the pod's
	// service account token.
	DefaultServiceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

	// reloginPause is the least time between two logins, so that a role
	// handing out tokens that are already near expiry cannot make the renewal
	// loop spin.
	reloginPause = time.Second
)

// AppRoleAuth logs in with AppRole.
type AppRoleAuth struct {
	RoleID   string
	SecretID string
	// MountPath is the auth mount; "approle" when empty.
	MountPath string
}

// KubernetesAuth logs in with the pod's service account token.
type KubernetesAuth struct {
	// Role is the Vault role bound to the service account.
	Role string
	// ServiceAccountTokenPath is read at every login (projected tokens
	// rotate); DefaultServiceAccountTokenPath when empty.
	ServiceAccountTokenPath string
	// MountPath is the auth mount; "kubernetes" when empty.
	MountPath string
}

// ClientOptions configure NewClient. Exactly one of Token, AppRole and
// Kubernetes is set. Nothing is read from VAULT_* environment variables: the
// broker's configuration is the only source (see NewClient).
type ClientOptions struct {
	// Addr is Vault's URL, e.g. https://vault.internal:8200.
	Addr string

	Token      string
	AppRole    *AppRoleAuth
	Kubernetes *KubernetesAuth

	// Timeout bounds one request when the caller's context has no earlier
	// deadline; DefaultTimeout when zero.
	Timeout time.Duration
	// MaxRetries after the first try; DefaultMaxRetries when zero, none when
	// negative.
	MaxRetries int
	// CACert is the path of a PEM file of CA certificates that sign Vault's
	// TLS certificate; the system pool when empty.
	CACert string
	// Logger receives token renewal and login events; nil discards them.
	Logger *slog.Logger
}

func (o ClientOptions) validate() error {
	u, err := url.Parse(o.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("addr must be an http:// or https:// URL")
	}
	methods := 0
	if o.Token != "" {
		methods++
	}
	if o.AppRole != nil {
		methods++
		if o.AppRole.RoleID == "" || o.AppRole.SecretID == "" {
			return errors.New("approle auth needs a role id and a secret id")
		}
	}
	if o.Kubernetes != nil {
		methods++
		if o.Kubernetes.Role == "" {
			return errors.New("kubernetes auth needs a role")
		}
	}
	if methods != 1 {
		return fmt.Errorf("exactly one auth method (token, approle, kubernetes) is required, %d given", methods)
	}
	if o.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	return nil
}

// NewClient returns a Vault client that is logged in, and a function that
// stops keeping its token alive. ctx bounds the login only; the renewal runs
// until stop is called.
//
// Token renewal uses the library's LifetimeWatcher. With AppRole or
// Kubernetes auth, when the watcher ends (the token reached its max TTL, or
// renewing failed until it nearly expired) the client logs in again, with
// backoff, and watches the new token. With token auth a renewable token is
// renewed the same way; a token that cannot be renewed is left alone (it
// expires when its TTL says, and the operator replaces it).
//
// # Environment
//
// The library reads VAULT_* variables in three places, and none of them may
// change what the broker does:
//
//   - api.DefaultConfig calls Config.ReadEnvironment (VAULT_ADDR,
//     VAULT_AGENT_ADDR, VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT,
//     VAULT_CLIENT_KEY, VAULT_CLIENT_TIMEOUT, VAULT_MAX_RETRIES,
//     VAULT_RATE_LIMIT, VAULT_SKIP_VERIFY, VAULT_SRV_LOOKUP,
//     VAULT_TLS_SERVER_NAME, VAULT_HTTP_PROXY, VAULT_PROXY_ADDR,
//     VAULT_DISABLE_REDIRECTS). We never use DefaultConfig: the Config is
//     built here field by field. api.NewClient still calls DefaultConfig
//     internally, but only takes from it the fields we leave empty, and we
//     leave none of those empty (HttpClient, its Transport, the retry waits).
//     One effect remains: a malformed value there (VAULT_CLIENT_TIMEOUT=abc,
//     an unreadable VAULT_CACERT) makes api.NewClient fail. That is loud, not
//     silent, and the error says to unset the variable.
//   - api.NewClient sets the token from VAULT_TOKEN, the namespace from
//     VAULT_NAMESPACE and extra headers from VAULT_HEADERS. The token is
//     cleared, and the header set is replaced with the library's own
//     X-Vault-Request header only, which drops the namespace and the rest.
//   - Every request asks api.DefaultWrappingLookupFunc for a wrap TTL, and it
//     reads VAULT_WRAP_TTL (a wrapped response would hide every secret we
//     read). The client gets a lookup function that never wraps.
//
// HTTP_PROXY, HTTPS_PROXY and NO_PROXY are honoured, as by every Go HTTP
// client (they are not Vault's, and a proxy is an operator's deliberate
// choice); VAULT_HTTP_PROXY is not.
func NewClient(ctx context.Context, o ClientOptions) (*api.Client, func(), error) {
	if err := o.validate(); err != nil {
		return nil, nil, fmt.Errorf("vault client: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := newAPIClient(o)
	if err != nil {
		return nil, nil, fmt.Errorf("vault client: %w", err)
	}
	r := &renewer{client: client, log: log}

	var first *api.Secret
	if o.Token != "" {
		client.SetToken(o.Token)
		// lookup-self checks the token now (a bad one fails start-up, not the
		// first refresh) and says whether it can be renewed.
		self, err := client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("vault client: look up token: %w", safeError(err, o.Token))
		}
		first, err = tokenSecret(self, o.Token)
		if err != nil {
			return nil, nil, fmt.Errorf("vault client: look up token: %w", err)
		}
	} else {
		// Logins go through a second client without a token: the main
		// client's token may have expired, and it keeps serving requests
		// while a new one is fetched.
		loginClient, err := newAPIClient(o)
		if err != nil {
			return nil, nil, fmt.Errorf("vault client: %w", err)
		}
		r.login = loginFunc(o, loginClient)
		if first, err = r.login(ctx); err != nil {
			return nil, nil, fmt.Errorf("vault client: %w", err)
		}
		client.SetToken(first.Auth.ClientToken)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { r.run(runCtx, first) })
	stop := sync.OnceFunc(func() {
		cancel()
		wg.Wait()
	})
	return client, stop, nil
}

// newAPIClient builds a client from o alone; see NewClient for how the
// environment is kept out.
func newAPIClient(o ClientOptions) (*api.Client, error) {
	transport := cleanhttp.DefaultPooledTransport()
	transport.TLSHandshakeTimeout = 10 * time.Second
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	httpClient := &http.Client{
		Transport: transport,
		// The Vault client follows Vault's redirects itself (once, never
		// from https to http); net/http must hand them over untouched.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	retries := o.MaxRetries
	switch {
	case retries == 0:
		retries = DefaultMaxRetries
	case retries < 0:
		retries = 0
	}
	cfg := &api.Config{
		Address:      o.Addr,
		HttpClient:   httpClient,
		Timeout:      timeout,
		MaxRetries:   retries,
		MinRetryWait: minRetryWait,
		MaxRetryWait: maxRetryWait,
		// Retries honour Retry-After on 429, as with the library's default
		// config; CheckRetry is the library's policy (network errors, 5xx,
		// 412 and 429; never a 4xx such as a check-and-set refusal). A
		// check-and-set write whose answer was lost may be retried and then
		// refused: the writer re-reads and finds its own write, which is safe.
		Backoff:    retryablehttp.RateLimitLinearJitterBackoff,
		CheckRetry: api.DefaultRetryPolicy,
	}
	if o.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: o.CACert}); err != nil {
			return nil, fmt.Errorf("ca cert %s: %w", o.CACert, err)
		}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (the Vault library also parses VAULT_* environment variables; unset a malformed one: the broker does not use them)", err)
	}
	client.ClearToken()
	client.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	client.SetWrappingLookupFunc(func(operation, path string) string { return "" })
	return client, nil
}

// loginFunc returns a login for o's auth method. It builds the library's auth
// method anew at every login, so that a rotated service account token file is
// read again.
func loginFunc(o ClientOptions, loginClient *api.Client) func(context.Context) (*api.Secret, error) {
	return func(ctx context.Context) (*api.Secret, error) {
		var (
			method  api.AuthMethod
			secrets []string
			err     error
		)
		switch {
		case o.AppRole != nil:
			opts := []approle.LoginOption{}
			if o.AppRole.MountPath != "" {
				opts = append(opts, approle.WithMountPath(o.AppRole.MountPath))
			}
			secrets = []string{o.AppRole.SecretID}
			method, err = approle.NewAppRoleAuth(o.AppRole.RoleID, &approle.SecretID{FromString: o.AppRole.SecretID}, opts...)
		case o.Kubernetes != nil:
			path := o.Kubernetes.ServiceAccountTokenPath
			if path == "" {
				path = DefaultServiceAccountTokenPath
			}
			opts := []kubernetes.LoginOption{kubernetes.WithServiceAccountTokenPath(path)}
			if o.Kubernetes.MountPath != "" {
				opts = append(opts, kubernetes.WithMountPath(o.Kubernetes.MountPath))
			}
			method, err = kubernetes.NewKubernetesAuth(o.Kubernetes.Role, opts...)
		default:
			return nil, errors.New("no login method")
		}
		if err != nil {
			return nil, fmt.Errorf("login: %w", safeError(err, secrets...))
		}
		secret, err := loginClient.Auth().Login(ctx, method)
		if err != nil {
			return nil, fmt.Errorf("login: %w", safeError(err, secrets...))
		}
		if secret.Auth == nil || secret.Auth.ClientToken == "" {
			return nil, errors.New("login: vault returned no token")
		}
		return secret, nil
	}
}

// tokenSecret turns a lookup-self answer into the shape LifetimeWatcher
// watches (login answers already have it).
func tokenSecret(self *api.Secret, token string) (*api.Secret, error) {
	renewable, err := self.TokenIsRenewable()
	if err != nil {
		return nil, err
	}
	ttl, err := self.TokenTTL()
	if err != nil {
		return nil, err
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   token,
		Renewable:     renewable,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

// renewer keeps one client's token alive.
type renewer struct {
	client *api.Client
	// login fetches a new token; nil with token auth, where there is no way
	// to get another.
	login func(context.Context) (*api.Secret, error)
	log   *slog.Logger
}

func (r *renewer) run(ctx context.Context, secret *api.Secret) {
	for {
		started := time.Now()
		r.watch(ctx, secret)
		if ctx.Err() != nil || r.login == nil {
			return
		}
		if time.Since(started) < reloginPause {
			select {
			case <-ctx.Done():
				return
			case <-time.After(reloginPause):
			}
		}
		if secret = r.relogin(ctx); secret == nil {
			return
		}
	}
}

// watch renews secret's token until renewing is over (max TTL reached, or
// renewals failing until expiry) or ctx ends.
func (r *renewer) watch(ctx context.Context, secret *api.Secret) {
	auth := secret.Auth
	if auth.LeaseDuration <= 0 {
		// A token without a TTL (a root or periodic-less orphan token) never
		// expires: nothing to renew, and no reason to log in again.
		r.log.Info("vault token has no TTL; not renewing")
		<-ctx.Done()
		return
	}
	if !auth.Renewable && r.login == nil {
		r.log.Warn("vault token is not renewable; it expires with its TTL", "ttl", time.Duration(auth.LeaseDuration)*time.Second)
		return
	}
	w, err := r.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
		Secret: secret,
		// Keep trying through a Vault outage until the token is about to
		// expire, instead of giving up on the first failed renewal.
		RenewBehavior: api.RenewBehaviorIgnoreErrors,
	})
	if err != nil {
		r.log.Error("vault token watcher", "err", safeError(err, auth.ClientToken))
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				r.log.Warn("vault token renewal ended", "err", safeError(err, auth.ClientToken))
			} else {
				r.log.Info("vault token reached the end of its renewable life")
			}
			return
		case renewal := <-w.RenewCh():
			if renewal.Secret != nil && renewal.Secret.Auth != nil {
				r.log.Debug("vault token renewed", "ttl", time.Duration(renewal.Secret.Auth.LeaseDuration)*time.Second)
			}
		}
	}
}

// relogin logs in until it succeeds or ctx ends (nil then).
func (r *renewer) relogin(ctx context.Context) *api.Secret {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0 // a broker without Vault must keep trying
	var secret *api.Secret
	err := backoff.RetryNotify(func() error {
		s, err := r.login(ctx)
		if err != nil {
			return err
		}
		secret = s
		return nil
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		r.log.Error("vault login failed; retrying", "err", err, "retry_in", next)
	})
	if err != nil {
		return nil // ctx ended
	}
	r.client.SetToken(secret.Auth.ClientToken)
	r.log.Info("vault login renewed the token")
	return secret
}
