package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/openhie/mhero-mediator/mediator"
	"github.com/openhie/mhero-mediator/openhim"
)

// service is the mediator with everything it runs on.
type service struct {
	cfg     *config
	logger  *slog.Logger
	state   *mediator.State
	metrics *mediator.Metrics
	syncer  *mediator.Syncer
	// httpClients are the clients built for each upstream system, by the
	// system's metrics label; "openhim" only when OpenHIM is configured.
	httpClients map[string]*http.Client
	// heartbeatTick, when set, replaces the heartbeat timer (tests beat by
	// hand).
	heartbeatTick <-chan time.Time
}

// newService opens the state and builds the syncer; nothing listens yet.
func newService(cfg *config, logger *slog.Logger) (*service, error) {
	return buildService(cfg, logger, mediator.OpenState)
}

// buildService is newService with the state opened by open: a plan runs on
// a private copy of the state file.
func buildService(cfg *config, logger *slog.Logger, open func(path string) (*mediator.State, error)) (*service, error) {
	cadreNames, err := cfg.cadreNames()
	if err != nil {
		return nil, err
	}
	metrics := mediator.NewMetrics(nil)
	clients := map[string]*http.Client{
		"openinfoman": upstreamClient(metrics, "openinfoman", nil, cfg.timeouts("openinfoman")),
		"rapidpro":    upstreamClient(metrics, "rapidpro", nil, cfg.timeouts("rapidpro")),
	}
	if cfg.openHIMURL != "" {
		tlsConfig, err := openhim.TLSConfig(cfg.openHIMCAFile, cfg.openHIMCertPin, cfg.openHIMInsecure)
		if err != nil {
			return nil, err
		}
		clients["openhim"] = upstreamClient(metrics, "openhim", tlsConfig, cfg.timeouts("openhim"))
	}
	state, err := open(cfg.stateFile)
	if err != nil {
		return nil, err
	}
	syncer, err := mediator.NewSyncer(cfg.settings, mediator.Options{
		State:                 state,
		Metrics:               metrics,
		Logger:                logger,
		OpenInfoManHTTP:       clients["openinfoman"],
		RapidProHTTP:          clients["rapidpro"],
		RapidProRatePerHour:   cfg.rapidProRate,
		WriteConcurrency:      cfg.writeConcurrency,
		RapidProRetryAfterCap: cfg.rapidProRetryAfterCap,
		LookupThreshold:       cfg.lookupThreshold,
		WatermarkMargin:       cfg.watermarkMargin,
		CadreNames:            cadreNames,
	})
	if err != nil {
		state.Close()
		return nil, err
	}
	// The console's last word outlives a restart.
	if applied, err := syncer.ApplyStoredConsoleConfig(); err != nil {
		logger.Error("the OpenHIM console config kept in the state was not applied; using the flags", "err", err)
	} else if applied {
		logger.Info("settings from the OpenHIM console config kept in the state")
	}
	return &service{cfg: cfg, logger: logger, state: state, metrics: metrics, syncer: syncer, httpClients: clients}, nil
}

// upstreamTimeouts bound one request to an upstream system.
type upstreamTimeouts struct {
	TLSHandshake   time.Duration
	ResponseHeader time.Duration // request sent to status line received
	Total          time.Duration // the whole exchange, body included
}

// defaultUpstreamTimeouts are per system, by metrics label.
var defaultUpstreamTimeouts = map[string]upstreamTimeouts{
	// provider-search runs its XQuery before it answers, then streams a page.
	"openinfoman": {TLSHandshake: 10 * time.Second, ResponseHeader: 2 * time.Minute, Total: 5 * time.Minute},
	"rapidpro":    {TLSHandshake: 10 * time.Second, ResponseHeader: 60 * time.Second, Total: 90 * time.Second},
	// Small JSON calls; a stuck one must not hold up the next heartbeats.
	"openhim": {TLSHandshake: 10 * time.Second, ResponseHeader: 30 * time.Second, Total: 45 * time.Second},
}

// upstreamClient is an HTTP client for system whose every attempt is counted
// and bounded by t, and which never follows a redirect: followed, a 301 turns
// a POST into a GET that "succeeds" without writing anything, so the 3xx is
// returned for the caller to report the wrong base URL.
func upstreamClient(m *mediator.Metrics, system string, tlsConfig *tls.Config, t upstreamTimeouts) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		base.TLSClientConfig = tlsConfig
	}
	base.TLSHandshakeTimeout = t.TLSHandshake
	base.ResponseHeaderTimeout = t.ResponseHeader
	// Every write in flight keeps its connection: with Go's default of two
	// idle ones per host, concurrent writes would dial (and shake hands
	// with TLS) anew for most requests.
	base.MaxIdleConnsPerHost = maxWriteConcurrency
	return &http.Client{
		Transport:     m.InstrumentTransport(system, base),
		Timeout:       t.Total,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// serve listens, registers with OpenHIM and heartbeats until ctx ends, then
// shuts down gracefully. started, when set, gets the listening address.
func (s *service) serve(ctx context.Context, started func(addr string)) error {
	// With OpenHIM, a run that outlasts the answer budget is answered
	// Processing and its transaction completed when it ends.
	var completer *mediator.Completer
	if s.cfg.openHIMURL != "" {
		completer = &mediator.Completer{State: s.state, MediatorURN: s.cfg.mediatorURN, Logger: s.logger}
	}
	srv := mediator.NewServer(mediator.ServerOptions{
		Syncer:       s.syncer,
		Metrics:      s.metrics,
		MediatorURN:  s.cfg.mediatorURN,
		Username:     s.cfg.syncUsername,
		Password:     s.cfg.syncPassword,
		SyncTimeout:  s.cfg.syncTimeout,
		Logger:       s.logger,
		SeparateOps:  s.cfg.opsAddr != "",
		Completer:    completer,
		AnswerBudget: s.cfg.answerBudget,
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.bind, strconv.Itoa(s.cfg.port)))
	if err != nil {
		return err
	}
	if s.cfg.opsAddr != "" {
		opsLn, err := net.Listen("tcp", s.cfg.opsAddr)
		if err != nil {
			ln.Close()
			return err
		}
		s.logger.Info("serving /metrics and /status apart", "addr", opsLn.Addr().String())
		go func() {
			if err := srv.Ops.Server.Serve(opsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("the /metrics and /status listener stopped", "err", err)
			}
		}()
	}
	s.logger.Info("listening", "addr", ln.Addr().String(), "advertised", fmt.Sprintf("http://%s:%d/sync", s.cfg.publicHost, s.cfg.port))
	served := make(chan error, 1)
	go func() { served <- srv.Echo.Server.Serve(ln) }()

	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	// The completer outlives the shutdown's last runs; what it cannot send
	// stays in the state for the next start.
	completerCtx, stopCompleter := context.WithCancel(context.Background())
	defer stopCompleter()
	completerDone := make(chan struct{})
	heartbeatDone := make(chan struct{})
	if s.cfg.openHIMURL == "" {
		s.logger.Info("no OpenHIM configured: not registering")
		srv.SetReady(true)
		close(heartbeatDone)
		close(completerDone)
	} else {
		hb, err := s.heartbeater(srv)
		if err != nil {
			close(completerDone)
			return errors.Join(err, srv.Shutdown(context.Background()))
		}
		completer.Put = hb.Client.PutTransaction
		go func() {
			defer close(completerDone)
			if err := completer.Run(completerCtx); err != nil {
				s.logger.Error("OpenHIM transaction completions stopped", "err", err)
			}
		}()
		go func() {
			defer close(heartbeatDone)
			if err := hb.Run(hbCtx); err != nil && hbCtx.Err() == nil {
				s.logger.Error("OpenHIM heartbeat stopped", "err", err)
			}
		}()
	}
	if started != nil {
		started(ln.Addr().String())
	}

	select {
	case err := <-served:
		stopHeartbeat()
		<-heartbeatDone
		stopCompleter()
		<-completerDone
		return err
	case <-ctx.Done():
	}
	s.logger.Info("shutting down", "grace", s.cfg.shutdownGrace)
	stopHeartbeat()
	<-heartbeatDone
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownGrace)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	stopCompleter()
	<-completerDone
	if completer != nil && completer.Put != nil {
		// The last runs' transactions, a cut one's included, are completed
		// now rather than at the next start.
		drainCtx, cancelDrain := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancelDrain()
		err = errors.Join(err, completer.Drain(drainCtx))
	}
	return err
}

// openHIMAuth is the Authenticator --openhim-auth chooses. auto finds the
// scheme core accepts and logs it once; basic and token are logged here.
func (s *service) openHIMAuth(hc *http.Client) openhim.Authenticator {
	user, password := s.cfg.openHIMUsername, s.cfg.openHIMPassword
	switch s.cfg.openHIMAuth {
	case openhim.SchemeBasic:
		s.logger.Info("openhim authentication scheme set by --openhim-auth", "scheme", openhim.SchemeBasic, "user", user)
		return openhim.NewBasicAuth(user, password)
	case openhim.SchemeToken:
		s.logger.Info("openhim authentication scheme set by --openhim-auth", "scheme", openhim.SchemeToken, "user", user)
		return openhim.NewTokenAuth(s.cfg.openHIMURL, user, password, hc)
	}
	auth := openhim.NewAutoAuth(s.cfg.openHIMURL, user, password, hc)
	auth.Logger = s.logger
	return auth
}

func (s *service) heartbeater(srv *mediator.Server) (*openhim.Heartbeater, error) {
	hc := s.httpClients["openhim"]
	if hc == nil {
		return nil, errors.New("no OpenHIM client: openhim-url was empty when the service was built")
	}
	auth := s.openHIMAuth(hc)
	reg := mediator.Registration{
		URN: s.cfg.mediatorURN, Version: version,
		Host: s.cfg.publicHost, Port: s.cfg.port,
		Username: s.cfg.syncUsername, Password: s.cfg.syncPassword,
		PollingSchedule: s.cfg.pollingSchedule, ChannelTimeout: s.cfg.channelTimeout,
		Settings: s.syncer.Settings(), ConfigSecrets: s.cfg.openHIMConfigSecrets,
	}
	mediatorDoc := reg.Mediator()
	if err := mediatorDoc.Validate(); err != nil {
		return nil, fmt.Errorf("OpenHIM registration: %w", err)
	}
	return &openhim.Heartbeater{
		Client:   openhim.NewClient(openhim.Config{BaseURL: s.cfg.openHIMURL, Auth: auth, HTTPClient: hc}),
		Mediator: mediatorDoc,
		Interval: s.cfg.heartbeatInterval,
		Tick:     s.heartbeatTick,
		OnConfig: func(raw json.RawMessage) {
			// Ready once registered and the console's config is applied:
			// a run before that would use settings the console overrides.
			defer srv.SetReady(true)
			changed, err := s.syncer.ApplyConsoleConfig(raw)
			switch {
			case err != nil:
				s.logger.Error("OpenHIM console config not applied; keeping the current settings", "err", err)
			case len(changed) > 0:
				// Names only: some values are secrets.
				s.logger.Info("settings changed by the OpenHIM console", "keys", changed)
			}
		},
		OnError: func(error) { s.metrics.HeartbeatFailures.Inc() },
		Logger:  s.logger,
	}, nil
}

func (s *service) close() error { return s.state.Close() }

// commandService parses a command's flags into a ready service.
func commandService(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*service, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{}
	cfg.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	logger, err := cfg.logger(stderr)
	if err != nil {
		return nil, err
	}
	return newService(cfg, logger)
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	svc, err := commandService("serve", args, stderr, nil)
	if err != nil {
		return err
	}
	defer svc.close()
	return svc.serve(ctx, nil)
}

// runFlags are the flags that choose the kind of run, for sync and plan.
func runFlags(fs *flag.FlagSet, o *mediator.RunOptions) {
	fs.BoolVar(&o.Full, "full", false, "make this run a full reconciliation: compare the whole registry with the managed group, so the workers who left it are retired")
	fs.BoolVar(&o.ConfirmRetire, "confirm-retire", false, "let this run retire more contacts than --max-retire-share allows: the registry is right")
}

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var opts mediator.RunOptions
	svc, err := commandService("sync", args, stderr, func(fs *flag.FlagSet) { runFlags(fs, &opts) })
	if err != nil {
		return err
	}
	defer svc.close()
	runCtx, cancel := context.WithTimeout(ctx, svc.cfg.syncTimeout)
	defer cancel()
	report, err := svc.syncer.RunWith(runCtx, opts)
	if err != nil {
		return err
	}
	printReport(stdout, report)
	if report.Status == openhim.StatusFailed {
		return fmt.Errorf("sync failed: %w", report.Err)
	}
	return nil
}
