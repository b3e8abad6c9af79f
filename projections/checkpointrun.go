package projections

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The runner's side of checkpoints: load one at start, save them as the
// view moves on.
//
// Who writes: every instance's runner watches the view's progress, but
// before saving it takes the claim in the KV bucket (an update at the
// revision it read, which fails if another instance took it first). So of
// several instances due at once, one writes; if it dies mid-way, the claim
// ages and another writes at the next due point. No leader election, and a
// failed writer costs one period, never a wrong checkpoint.

// Applied is the number of events this runner has applied since it was
// made: after a restore, only the tail it replayed.
func (r *Runner) Applied() uint64 { return r.applied.Load() }

// Restored returns the checkpoint the runner loaded its projections from,
// if it did.
func (r *Runner) Restored() (CheckpointInfo, bool) {
	if c := r.loaded.Load(); c != nil {
		return *c, true
	}
	return CheckpointInfo{}, false
}

// targets are the projections a checkpoint holds: the runner's, then
// those fed with it.
func (r *Runner) targets() ([]checkpointable, error) {
	out := make([]checkpointable, 0, 1+len(r.also))
	for _, p := range append([]Projection{r.p}, r.also...) {
		c, ok := p.(checkpointable)
		if !ok {
			return nil, fmt.Errorf("projections: %T cannot be checkpointed", p)
		}
		out = append(out, c)
	}
	return out, nil
}

// startCheckpoints loads the newest usable checkpoint if the projections
// are empty, then saves checkpoints in the background until the returned
// stop is called.
func (r *Runner) startCheckpoints(ctx context.Context) (stop func()) {
	log := r.cfg.Log.With("runner", r.cfg.Name)
	if _, err := r.targets(); err != nil {
		log.Error("checkpoints disabled", "error", err)
		return func() {}
	}
	if r.p.LastSeq() == 0 {
		_, _ = r.Restore(ctx) // logs which checkpoint was used and why
	}
	if r.cfg.CheckpointEvery == 0 && r.cfg.CheckpointInterval <= 0 {
		return func() {}
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.checkpointLoop(cctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Restore loads into the runner's projections, which must be empty, the
// newest checkpoint it can verify: the object's SHA-256, the format, every
// part's decoding and recorded digest, its sequence at or below the
// stream's last, and the same stream (name and creation time). A checkpoint
// that fails is logged and the next older one tried; with none left it
// returns ErrNoCheckpoint and the runner rebuilds from sequence 1. Run
// calls it; tools call it before RunToEnd.
func (r *Runner) Restore(ctx context.Context) (CheckpointInfo, error) {
	log := r.cfg.Log.With("runner", r.cfg.Name)
	if r.cfg.Checkpoints == nil {
		return CheckpointInfo{}, ErrNoCheckpoint
	}
	targets, err := r.targets()
	if err != nil {
		return CheckpointInfo{}, err
	}
	for _, t := range targets {
		if t.LastSeq() != 0 {
			return CheckpointInfo{}, fmt.Errorf("projections: restore into %T at seq %d: not empty", t, t.LastSeq())
		}
	}
	start := time.Now()
	last, created, err := r.streamIdentity(ctx)
	if err != nil {
		log.Warn("no checkpoint loaded: rebuilding from the stream", "reason", err)
		return CheckpointInfo{}, err
	}
	list, err := r.cfg.Checkpoints.List(ctx)
	if err != nil {
		log.Warn("no checkpoint loaded: rebuilding from the stream", "reason", err)
		return CheckpointInfo{}, err
	}
	for _, info := range list {
		c, err := r.loadCheckpoint(ctx, info, last, created)
		if err != nil {
			if ctx.Err() != nil {
				return CheckpointInfo{}, ctx.Err()
			}
			log.Warn("checkpoint not used", "checkpoint", info.Name, "seq", info.Seq, "reason", err)
			continue
		}
		if err := install(c, targets); err != nil {
			log.Warn("checkpoint not used", "checkpoint", info.Name, "seq", info.Seq, "reason", err)
			continue
		}
		if r.restored != nil {
			r.restored(c.Seq)
		}
		r.loaded.Store(&c.CheckpointInfo)
		log.Info("view restored from checkpoint", "checkpoint", c.Name, "seq", c.Seq, "digest", c.Digest,
			"bytes", c.Size, "took", time.Since(start).Round(time.Millisecond), "tail_events", last-c.Seq)
		return c.CheckpointInfo, nil
	}
	log.Info("no usable checkpoint: rebuilding from the stream", "checkpoints", len(list), "stream_last_seq", last)
	return CheckpointInfo{}, ErrNoCheckpoint
}

// loadCheckpoint loads one checkpoint and checks it against the stream.
func (r *Runner) loadCheckpoint(ctx context.Context, info CheckpointInfo, last uint64, created time.Time) (*Checkpoint, error) {
	switch {
	case info.Format != CheckpointFormat:
		return nil, fmt.Errorf("format %d, this build reads %d", info.Format, CheckpointFormat)
	case info.Seq == 0:
		return nil, errors.New("no sequence in its metadata")
	case info.Seq > last:
		return nil, fmt.Errorf("seq %d is past the stream's last sequence %d", info.Seq, last)
	}
	c, err := r.cfg.Checkpoints.Load(ctx, info)
	if err != nil {
		return nil, err
	}
	if c.Stream != r.cfg.Stream || !c.StreamCreated.Equal(created) {
		return nil, fmt.Errorf("folded from stream %s created %s, not %s created %s",
			c.Stream, c.StreamCreated.Format(time.RFC3339Nano), r.cfg.Stream, created.Format(time.RFC3339Nano))
	}
	return c, nil
}

// install puts each part of c into the projection of its kind; every
// projection must find its part.
func install(c *Checkpoint, targets []checkpointable) error {
	byKind := map[string]checkpointPart{}
	for _, p := range c.parts {
		byKind[p.checkpointKind()] = p
	}
	parts := make([]checkpointPart, len(targets))
	for i, t := range targets {
		kind := t.(checkpointPart).checkpointKind()
		if parts[i] = byKind[kind]; parts[i] == nil {
			return fmt.Errorf("no %s in the checkpoint", kind)
		}
	}
	for i, t := range targets {
		if err := t.installPart(parts[i]); err != nil {
			return err
		}
	}
	return nil
}

// streamIdentity returns the stream's last sequence and creation time.
func (r *Runner) streamIdentity(ctx context.Context) (uint64, time.Time, error) {
	s, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%s: stream %s: %w", r.cfg.Name, r.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%s: stream %s info: %w", r.cfg.Name, r.cfg.Stream, err)
	}
	return info.State.LastSeq, info.Created, nil
}

// Checkpoint saves a checkpoint of the projections now, whatever the
// claim says (the periodic saves in Run take the claim first). While the
// runner consumes, the copy is taken on its goroutine between two events,
// so readers never wait for it.
func (r *Runner) Checkpoint(ctx context.Context) (CheckpointInfo, error) {
	if r.cfg.Checkpoints == nil {
		return CheckpointInfo{}, errors.New("projections: the runner has no checkpoint store")
	}
	_, created, err := r.streamIdentity(ctx)
	if err != nil {
		return CheckpointInfo{}, err
	}
	parts, err := r.freeze(ctx)
	if err != nil {
		return CheckpointInfo{}, err
	}
	if parts[0].LastSeq() == 0 {
		return CheckpointInfo{}, errors.New("projections: nothing applied yet to checkpoint")
	}
	return r.cfg.Checkpoints.save(ctx, parts, r.cfg.Now(), r.cfg.Stream, created)
}

// freeze copies the projections' state at one sequence.
func (r *Runner) freeze(ctx context.Context) ([]checkpointPart, error) {
	req := make(chan []checkpointPart, 1)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if !r.consuming.Load() {
			// Nobody applies: copy them here.
			parts, err := r.freezeNow()
			if err == nil {
				return parts, nil
			}
		}
		select {
		case r.freezeReq <- req:
			select {
			case parts := <-req:
				if parts == nil {
					return nil, errors.New("projections: cannot checkpoint")
				}
				return parts, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// serveFreeze answers a freeze request on the applying goroutine.
func (r *Runner) serveFreeze(req chan []checkpointPart) {
	parts, err := r.freezeNow()
	if err != nil {
		r.cfg.Log.Error("checkpoint copy", "runner", r.cfg.Name, "error", err)
	}
	req <- parts
}

func (r *Runner) freezeNow() ([]checkpointPart, error) {
	targets, err := r.targets()
	if err != nil {
		return nil, err
	}
	parts := make([]checkpointPart, len(targets))
	for i, t := range targets {
		parts[i] = t.freezePart()
		if parts[i].LastSeq() != parts[0].LastSeq() {
			return nil, fmt.Errorf("projections at different sequences (%d, %d)", parts[0].LastSeq(), parts[i].LastSeq())
		}
	}
	return parts, nil
}

// due reports whether a checkpoint at seq is due after the claim c.
func (r *Runner) due(seq uint64, c claim, now time.Time) bool {
	if seq <= c.Seq {
		return false
	}
	if every := r.cfg.CheckpointEvery; every > 0 && seq-c.Seq >= every {
		return true
	}
	return r.cfg.CheckpointInterval > 0 && now.Sub(c.At) >= r.cfg.CheckpointInterval
}

// checkpointLoop saves a checkpoint whenever one is due and this instance
// takes the claim, until ctx ends. While the view catches up (more than
// CheckpointEvery events behind the stream, or 100 000 without a count) it
// waits: a rebuild is checkpointed once it is done, not every few seconds
// on the way.
func (r *Runner) checkpointLoop(ctx context.Context) {
	log := r.cfg.Log.With("runner", r.cfg.Name)
	poll := time.Second
	if i := r.cfg.CheckpointInterval; i > 0 && i < poll {
		poll = i
	}
	behind := r.cfg.CheckpointEvery
	if behind == 0 {
		behind = DefaultCheckpointEvery
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var known claim
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq, now := r.p.LastSeq(), r.cfg.Now()
		if !r.due(seq, known, now) || r.streamLast.Load() > seq+behind {
			continue
		}
		c, rev, err := r.cfg.Checkpoints.readClaim(ctx)
		if err != nil {
			log.Warn("checkpoint claim", "error", err)
			continue
		}
		if known = c; !r.due(seq, c, now) {
			continue
		}
		mine := claim{Seq: seq, At: now}
		if err := r.cfg.Checkpoints.takeClaim(ctx, mine, rev); err != nil {
			log.Debug("checkpoint claimed by another instance", "error", err)
			continue // read again next time
		}
		known = mine
		start := time.Now()
		info, err := r.Checkpoint(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("checkpoint not saved", "error", err)
			}
			continue
		}
		log.Info("checkpoint saved", "checkpoint", info.Name, "seq", info.Seq, "bytes", info.Size,
			"took", time.Since(start).Round(time.Millisecond))
	}
}
