package main

import (
	"context"
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
	// heartbeatTick, when set, replaces the heartbeat timer (tests beat by
	// hand).
	heartbeatTick <-chan time.Time
}

// newService opens the state and builds the syncer; nothing listens yet.
func newService(cfg *config, logger *slog.Logger) (*service, error) {
	state, err := mediator.OpenState(cfg.stateFile)
	if err != nil {
		return nil, err
	}
	metrics := mediator.NewMetrics(nil)
	syncer, err := mediator.NewSyncer(cfg.settings, mediator.Options{
		State:                 state,
		Metrics:               metrics,
		Logger:                logger,
		OpenInfoManHTTP:       upstreamClient(metrics, "openinfoman", nil),
		RapidProHTTP:          upstreamClient(metrics, "rapidpro", nil),
		RapidProRatePerHour:   cfg.rapidProRate,
		RapidProRetryAfterCap: cfg.rapidProRetryAfterCap,
		LookupThreshold:       cfg.lookupThreshold,
		WatermarkMargin:       cfg.watermarkMargin,
	})
	if err != nil {
		state.Close()
		return nil, err
	}
	return &service{cfg: cfg, logger: logger, state: state, metrics: metrics, syncer: syncer}, nil
}

// upstreamClient is an HTTP client whose every attempt is counted.
func upstreamClient(m *mediator.Metrics, system string, base *http.Transport) *http.Client {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &http.Client{Transport: m.InstrumentTransport(system, base), Timeout: 5 * time.Minute}
}

// serve listens, registers with OpenHIM and heartbeats until ctx ends, then
// shuts down gracefully. started, when set, gets the listening address.
func (s *service) serve(ctx context.Context, started func(addr string)) error {
	srv := mediator.NewServer(mediator.ServerOptions{
		Syncer:      s.syncer,
		Metrics:     s.metrics,
		MediatorURN: s.cfg.mediatorURN,
		Username:    s.cfg.syncUsername,
		Password:    s.cfg.syncPassword,
		SyncTimeout: s.cfg.syncTimeout,
		Logger:      s.logger,
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.bind, strconv.Itoa(s.cfg.port)))
	if err != nil {
		return err
	}
	s.logger.Info("listening", "addr", ln.Addr().String(), "advertised", fmt.Sprintf("http://%s:%d/sync", s.cfg.publicHost, s.cfg.port))
	served := make(chan error, 1)
	go func() { served <- srv.Echo.Server.Serve(ln) }()

	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	heartbeatDone := make(chan struct{})
	if s.cfg.openHIMURL == "" {
		s.logger.Info("no OpenHIM configured: not registering")
		srv.SetReady(true)
		close(heartbeatDone)
	} else {
		hb, err := s.heartbeater(srv)
		if err != nil {
			return errors.Join(err, srv.Shutdown(context.Background()))
		}
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
	return err
}

func (s *service) heartbeater(srv *mediator.Server) (*openhim.Heartbeater, error) {
	tlsConfig, err := openhim.TLSConfig(s.cfg.openHIMCAFile, s.cfg.openHIMCertPin, s.cfg.openHIMInsecure)
	if err != nil {
		return nil, err
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tlsConfig
	hc := upstreamClient(s.metrics, "openhim", base)
	hc.Timeout = 30 * time.Second

	auth := openhim.NewBasicAuth(s.cfg.openHIMUsername, s.cfg.openHIMPassword)
	if s.cfg.openHIMAuth == "token" {
		auth = openhim.NewTokenAuth(s.cfg.openHIMURL, s.cfg.openHIMUsername, s.cfg.openHIMPassword, hc)
	}
	reg := mediator.Registration{
		URN: s.cfg.mediatorURN, Version: version,
		Host: s.cfg.publicHost, Port: s.cfg.port,
		Username: s.cfg.syncUsername, Password: s.cfg.syncPassword,
		PollingSchedule: s.cfg.pollingSchedule, ChannelTimeout: s.cfg.channelTimeout,
		Settings: s.syncer.Settings(),
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
			if err := s.syncer.ApplyConsoleConfig(raw); err != nil {
				s.logger.Error("OpenHIM console config not applied; keeping the current settings", "err", err)
				return
			}
			s.logger.Info("settings updated from the OpenHIM console")
		},
		OnError:      func(error) { s.metrics.HeartbeatFailures.Inc() },
		OnRegistered: func() { srv.SetReady(true) },
		Logger:       s.logger,
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

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	svc, err := commandService("sync", args, stderr, nil)
	if err != nil {
		return err
	}
	defer svc.close()
	runCtx, cancel := context.WithTimeout(ctx, svc.cfg.syncTimeout)
	defer cancel()
	report, err := svc.syncer.Run(runCtx)
	if err != nil {
		return err
	}
	printReport(stdout, report)
	if report.Status == openhim.StatusFailed {
		return fmt.Errorf("sync failed: %w", report.Err)
	}
	return nil
}
