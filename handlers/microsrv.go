package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// microService is the tokenledger service as the NATS micro protocol sees
// it (ADR-32: the $SRV.PING, $SRV.INFO and $SRV.STATS subjects, micro's
// JSON types and error headers), for a service whose replies are sent
// after the subscription's handler returned.
//
// nats.go's micro.AddService counts a request, its processing time and
// its error when its handler returns, from what Respond or Error recorded
// inside the handler. A NATS subscription runs its handler one message at
// a time, so the service hands each request to its worker pool and the
// handler returns at once: micro would count every request as a success
// taking microseconds. Here a request is counted when it is answered (its
// srvRequest's Respond or Error), with the time from its arrival to its
// reply, so `nats micro stats` shows the true requests, errors and
// processing time of every endpoint, for one instance id per process.
type microService struct {
	nc       *nats.Conn
	identity micro.ServiceIdentity
	desc     string
	started  time.Time

	mu        sync.Mutex
	endpoints []*srvEndpoint // in the order added
	subs      []*nats.Subscription
	stopped   bool
}

// srvEndpoint is one endpoint and its counts.
type srvEndpoint struct {
	info micro.EndpointInfo

	mu        sync.Mutex
	requests  int
	errors    int
	lastError string
	took      time.Duration
}

// newMicroService registers the control subjects of instance id of the
// service named name (micro's PING, INFO and STATS verbs, each for all
// services, the name and the instance id) on nc.
func newMicroService(nc *nats.Conn, name, id, version, description string, metadata map[string]string) (*microService, error) {
	s := &microService{
		nc:       nc,
		identity: micro.ServiceIdentity{Name: name, ID: id, Version: version, Metadata: metadata},
		desc:     description,
		started:  time.Now().UTC(),
	}
	if s.identity.Metadata == nil {
		s.identity.Metadata = map[string]string{}
	}
	for verb, reply := range map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: s.identity, Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return s.info() },
		micro.StatsVerb: func() any { return s.stats() },
	} {
		for _, at := range [][2]string{{"", ""}, {name, ""}, {name, s.identity.ID}} {
			subject, err := micro.ControlSubject(verb, at[0], at[1])
			if err != nil {
				return nil, errors.Join(err, s.stop())
			}
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
				body, _ := json.Marshal(reply())
				_ = m.Respond(body) // a monitoring request without a reply subject: nobody to answer
			})
			if err != nil {
				return nil, errors.Join(fmt.Errorf("subscribe %s: %w", subject, err), s.stop())
			}
			s.subs = append(s.subs, sub)
		}
	}
	return s, nil
}

// addEndpoint subscribes handler to subject in micro's default queue
// group under the endpoint name. The handler's request answers with
// Respond or Error, which count it.
func (s *microService) addEndpoint(name, subject string, handler micro.HandlerFunc) error {
	ep := &srvEndpoint{info: micro.EndpointInfo{Name: name, Subject: subject, QueueGroup: micro.DefaultQueueGroup}}
	sub, err := s.nc.QueueSubscribe(subject, micro.DefaultQueueGroup, func(m *nats.Msg) {
		handler(&srvRequest{nc: s.nc, msg: m, ep: ep, arrived: time.Now()})
	})
	if err != nil {
		return fmt.Errorf("add endpoint %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints = append(s.endpoints, ep)
	s.subs = append(s.subs, sub)
	return nil
}

// stop drains every subscription: no new request is taken, those already
// delivered are still handled. It does not wait for the drain.
func (s *microService) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	for _, sub := range s.subs {
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("drain %s: %w", sub.Subject, err))
		}
	}
	return errors.Join(errs...)
}

func (s *microService) info() micro.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	eps := make([]micro.EndpointInfo, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		eps = append(eps, ep.info)
	}
	return micro.Info{ServiceIdentity: s.identity, Type: micro.InfoResponseType, Description: s.desc, Endpoints: eps}
}

func (s *microService) stats() micro.Stats {
	s.mu.Lock()
	eps := append([]*srvEndpoint(nil), s.endpoints...)
	s.mu.Unlock()
	out := micro.Stats{ServiceIdentity: s.identity, Type: micro.StatsResponseType, Started: s.started,
		Endpoints: make([]*micro.EndpointStats, 0, len(eps))}
	for _, ep := range eps {
		ep.mu.Lock()
		st := &micro.EndpointStats{Name: ep.info.Name, Subject: ep.info.Subject, QueueGroup: ep.info.QueueGroup,
			NumRequests: ep.requests, NumErrors: ep.errors, LastError: ep.lastError, ProcessingTime: ep.took}
		ep.mu.Unlock()
		if st.NumRequests > 0 {
			st.AverageProcessingTime = st.ProcessingTime / time.Duration(st.NumRequests)
		}
		out.Endpoints = append(out.Endpoints, st)
	}
	return out
}

// record counts one answered request that took took; errText is its
// error ("" for a success), in micro's form.
func (ep *srvEndpoint) record(took time.Duration, errText string) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.requests++
	ep.took += took
	if errText != "" {
		ep.errors++
		ep.lastError = errText
	}
}

// srvRequest is a request to a microService endpoint: a micro.Request
// whose Respond and Error count it, once answered, in its endpoint's stats
// as micro's do (a reply that cannot be sent is an error too), from
// whichever goroutine answers.
type srvRequest struct {
	nc      *nats.Conn
	msg     *nats.Msg
	ep      *srvEndpoint
	arrived time.Time
}

// Respond sends the response and counts the request.
func (r *srvRequest) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, opt := range opts {
		opt(m)
	}
	err := r.respond(m)
	if err != nil {
		err = fmt.Errorf("%w: %w", micro.ErrRespond, err)
		r.ep.record(time.Since(r.arrived), err.Error())
		return err
	}
	r.ep.record(time.Since(r.arrived), "")
	return nil
}

// RespondJSON sends response as JSON and counts the request.
func (r *srvRequest) RespondJSON(response any, opts ...micro.RespondOpt) error {
	body, err := json.Marshal(response)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return r.Respond(body, opts...)
}

// Error sends an error response (micro's headers: code in
// Nats-Service-Error-Code, description in Nats-Service-Error) and counts
// the request as an error "code:description".
func (r *srvRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" || description == "" {
		return fmt.Errorf("%w: error code and description", micro.ErrArgRequired)
	}
	m := &nats.Msg{Data: data, Header: nats.Header{micro.ErrorHeader: {description}, micro.ErrorCodeHeader: {code}}}
	for _, opt := range opts {
		opt(m)
	}
	err := r.respond(m)
	if err != nil {
		r.ep.record(time.Since(r.arrived), err.Error())
		return err
	}
	r.ep.record(time.Since(r.arrived), code+":"+description)
	return nil
}

// respond publishes m on the request's reply subject (as nats.Msg's
// RespondMsg, without its lock of the subscription, which the
// subscription's delivery takes for every message).
func (r *srvRequest) respond(m *nats.Msg) error {
	if r.msg.Reply == "" {
		return nats.ErrMsgNoReply
	}
	m.Subject = r.msg.Reply
	return r.nc.PublishMsg(m)
}

// Data is the request's body.
func (r *srvRequest) Data() []byte { return r.msg.Data }

// Headers are the request's headers.
func (r *srvRequest) Headers() micro.Headers { return micro.Headers(r.msg.Header) }

// Subject is the subject the request was sent to.
func (r *srvRequest) Subject() string { return r.msg.Subject }

// Reply is the request's reply subject.
func (r *srvRequest) Reply() string { return r.msg.Reply }
