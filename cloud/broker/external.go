package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ExternalOptions configure a Bus on an external broker.
type ExternalOptions struct {
	// URL is the broker: tcp://host:port or tls://host:port (mqtt:// and
	// mqtts:// are accepted as the same).
	URL string
	// Username and Password, if set, are the login. Credentials, if set,
	// is asked on every (re)connect instead (a fresh token each time).
	Username, Password string
	Credentials        func() (user, pass string)
	// TLSConfig for tls:// (system roots if nil).
	TLSConfig *tls.Config
	// ClientID (a random "castd-…" if empty). Two castd instances on one
	// broker need different IDs.
	ClientID string
	// ConnectTimeout bounds one connection attempt, PublishTimeout one
	// publish (DefaultConnectTimeout, DefaultPublishTimeout). KeepAlive is
	// the MQTT keepalive (DefaultKeepAlive).
	ConnectTimeout, PublishTimeout, KeepAlive time.Duration
	// Logger (slog.Default if nil).
	Logger *slog.Logger
}

// Defaults of ExternalOptions.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultKeepAlive      = 30 * time.Second
)

// ensureDefaults gives every zero (or negative) duration its default.
func (o *ExternalOptions) ensureDefaults() {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// External is a Bus on an external broker through paho. It reconnects by
// itself and re-subscribes after every reconnect.
type External struct {
	c       paho.Client
	log     *slog.Logger
	timeout time.Duration

	mu   sync.Mutex
	subs []extSub
}

type extSub struct {
	filter string
	h      paho.MessageHandler
}

// DialExternal connects to an external broker and returns its Bus. It keeps
// trying until the first connection succeeds or ctx ends; after that,
// reconnection is automatic.
func DialExternal(ctx context.Context, opts ExternalOptions) (*External, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("broker: ExternalOptions.URL: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		u.Scheme = "tcp"
	case "tls", "ssl", "mqtts":
		u.Scheme = "tls"
	default:
		return nil, fmt.Errorf("broker: ExternalOptions.URL %q: scheme must be tcp:// or tls://", opts.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("broker: ExternalOptions.URL %q has no host", opts.URL)
	}
	if opts.ClientID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("broker: client ID: %w", err)
		}
		opts.ClientID = "castd-" + hex.EncodeToString(b[:])
	}
	opts.ensureDefaults()
	e := &External{log: opts.Logger.With("broker", u.Redacted()), timeout: opts.PublishTimeout}

	po := paho.NewClientOptions().
		AddBroker(u.String()).
		SetClientID(opts.ClientID).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetConnectTimeout(opts.ConnectTimeout).
		SetKeepAlive(opts.KeepAlive).
		SetWriteTimeout(opts.PublishTimeout).
		SetOnConnectHandler(e.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			e.log.Warn("mqtt connection lost; reconnecting", "err", err)
		})
	if opts.Credentials != nil {
		po.SetCredentialsProvider(opts.Credentials)
	} else if opts.Username != "" {
		po.SetUsername(opts.Username).SetPassword(opts.Password)
	}
	if u.Scheme == "tls" {
		conf := opts.TLSConfig
		if conf == nil {
			conf = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		po.SetTLSConfig(conf)
	}
	e.c = paho.NewClient(po)

	tok := e.c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			e.c.Disconnect(0)
			return nil, fmt.Errorf("broker: connect %s: %w", u.Redacted(), err)
		}
	case <-ctx.Done():
		e.c.Disconnect(0)
		return nil, fmt.Errorf("broker: connect %s: %w", u.Redacted(), ctx.Err())
	}
	return e, nil
}

// onConnect runs (on its own goroutine) after every connect: a clean
// session has no subscriptions, so they are made again.
func (e *External) onConnect(c paho.Client) {
	e.mu.Lock()
	subs := append([]extSub(nil), e.subs...)
	e.mu.Unlock()
	e.log.Info("mqtt connected", "subscriptions", len(subs))
	for _, s := range subs {
		if err := e.subscribe(s); err != nil {
			e.log.Error("mqtt resubscribe", "filter", s.filter, "err", err)
		}
	}
}

func (e *External) subscribe(s extSub) error {
	tok := e.c.Subscribe(s.filter, 1, s.h)
	if !tok.WaitTimeout(e.timeout) {
		return errors.New("timed out")
	}
	return tok.Error()
}

// Subscribe implements Bus.
func (e *External) Subscribe(filter string, fn func(topic string, payload []byte, retained bool)) error {
	s := extSub{filter: filter, h: func(_ paho.Client, m paho.Message) {
		fn(m.Topic(), m.Payload(), m.Retained())
	}}
	e.mu.Lock()
	e.subs = append(e.subs, s)
	e.mu.Unlock()
	if err := e.subscribe(s); err != nil {
		// Kept: the next reconnect subscribes again.
		return fmt.Errorf("broker: subscribe %q: %w", filter, err)
	}
	return nil
}

// Publish implements Bus.
func (e *External) Publish(topic string, payload []byte, retain bool) error {
	tok := e.c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(e.timeout) {
		return fmt.Errorf("broker: publish %s: timed out", topic)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

// Connected reports whether the connection is up now.
func (e *External) Connected() bool { return e.c.IsConnectionOpen() }

// Close implements Bus.
func (e *External) Close() error {
	e.c.Disconnect(250)
	return nil
}
