package mediator

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/openhie/mhero-mediator/openhim"
)

// ServerOptions wire the HTTP service.
type ServerOptions struct {
	Syncer      *Syncer
	Metrics     *Metrics
	MediatorURN string
	// Username and Password, when set, are the Basic credentials OpenHIM's
	// channel route sends; /sync refuses any other caller.
	Username, Password string
	// SyncTimeout bounds one run; the run outlives the trigger's request,
	// since OpenHIM may hang up first.
	SyncTimeout time.Duration
	Logger      *slog.Logger
	// SeparateOps serves /metrics and /status on Server.Ops, for a listen
	// address of their own, instead of beside /sync.
	SeparateOps bool
	// Completer, when set (OpenHIM is configured), lets a run that outlasts
	// AnswerBudget be answered "Processing" at once and its transaction
	// completed when it ends; 0 means DefaultAnswerBudget.
	Completer    *Completer
	AnswerBudget time.Duration
}

// DefaultAnswerBudget is how long a trigger waits for its run before it is
// answered "Processing": well inside core's route timeouts.
const DefaultAnswerBudget = 30 * time.Second

// Limits of what the server accepts: a trigger carries no body worth more
// than a kilobyte, and a slow client must not hold a connection open.
const (
	maxRequestBody    = "64K"
	readHeaderTimeout = 10 * time.Second
)

// Server is the mediator's HTTP face.
type Server struct {
	Echo *echo.Echo
	// Ops serves /metrics and /status when ServerOptions.SeparateOps is
	// set; otherwise it is Echo.
	Ops   *echo.Echo
	opts  ServerOptions
	ready atomic.Bool

	// Runs take their context from here rather than from the request, so a
	// shutdown can let them finish and then stop what is left.
	runCtx    context.Context
	cancelRun context.CancelCauseFunc
	runs      sync.WaitGroup
}

// NewServer builds the routes. The service reports ready once SetReady is
// called, after registering with OpenHIM.
func NewServer(opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = time.Hour
	}
	if opts.AnswerBudget <= 0 {
		opts.AnswerBudget = DefaultAnswerBudget
	}
	newEcho := func() *echo.Echo {
		e := echo.New()
		e.HideBanner, e.HidePort = true, true
		e.Server.ReadHeaderTimeout = readHeaderTimeout
		e.Use(middleware.Recover())
		e.Use(middleware.BodyLimit(maxRequestBody))
		e.Use(requestLogger(opts.Logger))
		return e
	}
	e := newEcho()
	s := &Server{Echo: e, Ops: e, opts: opts}
	if opts.SeparateOps {
		s.Ops = newEcho()
	}
	s.runCtx, s.cancelRun = context.WithCancelCause(context.Background())

	triggers := e.Group("")
	if opts.Username != "" || opts.Password != "" {
		triggers.Use(middleware.BasicAuth(func(user, pass string, _ echo.Context) (bool, error) {
			okUser := subtle.ConstantTimeCompare([]byte(user), []byte(opts.Username)) == 1
			okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(opts.Password)) == 1
			return okUser && okPass, nil
		}))
	}
	// A polling channel calls the route's path with GET; a route without a
	// path is called on /trigger.
	for _, path := range []string{"/sync", "/trigger"} {
		triggers.GET(path, s.handleSync)
		triggers.POST(path, s.handleSync)
	}

	// The operator's view: never a setting's value, so not behind the
	// trigger's credentials, like /metrics.
	s.Ops.GET("/status", func(c echo.Context) error {
		st, err := s.opts.Syncer.Status()
		if err != nil {
			return echo.NewHTTPError(http.StatusInternalServerError, err.Error())
		}
		return c.JSONPretty(http.StatusOK, st, "  ")
	})

	reg := opts.Metrics.Registry
	s.Ops.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", func(c echo.Context) error {
		if !s.ready.Load() {
			return c.String(http.StatusServiceUnavailable, notReady)
		}
		return c.String(http.StatusOK, "ready\n")
	})
	return s
}

// notReady is the answer before the service is registered with OpenHIM and
// has applied the console's config.
const notReady = "not ready: not yet registered with OpenHIM, or its console config not yet applied; the next poll runs the sync\n"

// SetReady marks the service ready (or not) for /readyz and /sync.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

func (s *Server) handleSync(c echo.Context) error {
	req := c.Request()
	if !s.ready.Load() {
		// Core records the refusal; its next poll runs the sync.
		return c.String(http.StatusServiceUnavailable, notReady)
	}
	txID := req.Header.Get("X-OpenHIM-TransactionID")
	log := s.opts.Logger.With("transaction", txID, "channel", req.Header.Get("channel-id"))
	opts, err := runOptions(c)
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	log.Info("sync triggered", "last_run_at", req.Header.Get("X-OpenHIM-LastRunAt"), "full", opts.Full, "dry_run", opts.DryRun, "confirm_retire", opts.ConfirmRetire)

	// The run belongs to the service, not to the request: it goes on after
	// an answer "Processing", and a shutdown waits for it.
	var (
		mu    sync.Mutex
		async bool
		done  = make(chan openhim.Response, 1)
	)
	s.runs.Add(1)
	go func() {
		defer s.runs.Done()
		ctx, cancel := context.WithTimeout(s.runCtx, s.opts.SyncTimeout)
		defer cancel()
		resp := s.runResponse(ctx, opts, log)
		mu.Lock()
		defer mu.Unlock()
		if !async {
			done <- resp
			return
		}
		if err := s.opts.Completer.complete(txID, resp); err != nil {
			log.Error("the run's completion could not be recorded; its transaction stays Processing", "err", err)
		}
	}()

	var budget <-chan time.Time
	if s.opts.Completer != nil && txID != "" {
		timer := time.NewTimer(s.opts.AnswerBudget)
		defer timer.Stop()
		budget = timer.C
	}
	var resp openhim.Response
	select {
	case resp = <-done:
	case <-budget:
		mu.Lock()
		select {
		case resp = <-done: // it ended just now
		default:
			if err := s.opts.Completer.started(txID); err != nil {
				mu.Unlock()
				return err
			}
			async = true
			resp = processingResponse(s.opts.MediatorURN)
			log.Info("the run outlasts the answer budget: answered Processing, the transaction is completed when it ends", "budget", s.opts.AnswerBudget)
		}
		mu.Unlock()
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, openhim.ContentType, body)
}

// runResponse runs and renders the run as OpenHIM records it.
func (s *Server) runResponse(ctx context.Context, opts RunOptions, log *slog.Logger) openhim.Response {
	report, err := s.opts.Syncer.RunWith(ctx, opts)
	if errors.Is(err, ErrRunInProgress) {
		log.Info("sync trigger ignored: a run is in progress")
		return inProgressResponse(s.opts.MediatorURN)
	}
	return report.OpenHIM(s.opts.MediatorURN)
}

// runOptions reads what a trigger asks for: ?full=true for a full
// reconciliation, ?dry_run=true for a plan, ?confirm_retire=true to let a
// reconciliation past the circuit breaker.
func runOptions(c echo.Context) (RunOptions, error) {
	var o RunOptions
	known := map[string]*bool{"full": &o.Full, "dry_run": &o.DryRun, "confirm_retire": &o.ConfirmRetire}
	for name := range c.QueryParams() {
		if known[name] == nil {
			// A misspelt dry_run must not run a real sync.
			return o, fmt.Errorf("unknown query parameter %q (known: full, dry_run, confirm_retire)", name)
		}
	}
	for name, into := range known {
		v := c.QueryParam(name)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("query parameter %s=%q is not true or false", name, v)
		}
		*into = b
	}
	return o, nil
}

func inProgressResponse(urn string) openhim.Response {
	now := time.Now().UTC()
	return openhim.Response{
		MediatorURN: urn,
		Status:      openhim.StatusCompleted,
		Response: openhim.HTTPResponse{
			Status:    http.StatusOK,
			Headers:   map[string]string{"content-type": "application/json"},
			Body:      `{"status":"in progress","message":"` + ErrRunInProgress.Error() + `; this trigger started nothing"}`,
			Timestamp: now,
		},
		Properties: map[string]string{"skipped": "a sync run is already in progress"},
	}
}

// Shutdown stops taking requests, lets a running sync finish until ctx ends,
// then cancels it and waits for it to record what it did.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.Echo.Shutdown(ctx)
	if s.Ops != s.Echo {
		err = errors.Join(err, s.Ops.Shutdown(ctx))
	}
	done := make(chan struct{})
	go func() { s.runs.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// The grace is over: the run is cut, its work left pending for the
		// next run and its answer recorded as such. That is the shutdown
		// working, not failing.
		s.cancelRun(ErrShutdown)
		<-done
		s.opts.Logger.Warn("shutdown: a sync run was cut; the next run finishes its work")
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			err = nil
		}
	}
	s.cancelRun(ErrShutdown)
	return err
}

// requestLogger logs every request, the probes and scrapes at debug level.
func requestLogger(logger *slog.Logger) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURI: true, LogMethod: true, LogLatency: true, LogError: true, HandleError: true,
		LogValuesFunc: func(_ echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelDebug
			if v.URI != "/metrics" && v.URI != "/healthz" && v.URI != "/readyz" && v.URI != "/status" {
				level = slog.LevelInfo
			}
			logger.Log(context.Background(), level, "request", "method", v.Method, "uri", v.URI, "status", v.Status, "latency", v.Latency, "err", v.Error)
			return nil
		},
	})
}
