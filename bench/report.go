package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a run's outcome; its JSON is what `tokenledger bench --json`
// prints (version 1).
type Report struct {
	Version   int          `json:"version"`
	StartedAt time.Time    `json:"started_at"`
	Command   []string     `json:"command"`
	Host      Host         `json:"host"`
	Target    string       `json:"target"`
	Settings  Settings     `json:"settings"`
	Results   []CaseResult `json:"results"`
	Targets   []TargetEval `json:"targets"`
}

// Host is the machine the run was on.
type Host struct {
	CPUs      int    `json:"cpus"`
	GOMAXPROC int    `json:"gomaxprocs"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Hostname  string `json:"hostname,omitempty"`
}

// Settings are the run's measurement settings.
type Settings struct {
	DurationS      float64 `json:"duration_s"`
	WarmupS        float64 `json:"warmup_s"`
	Conns          int     `json:"conns"`
	PriorRotations int     `json:"prior_rotations"`
	BareWorkers    int     `json:"bare_workers"`
	// Slices is how many alternating slices of the window each case and
	// its bare pipeline were measured in (1: one after the other).
	Slices int `json:"slices"`
}

// TargetEval is one performance target of issue 6 checked against a run.
type TargetEval struct {
	Target string  `json:"target"`
	Case   string  `json:"case"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Unit   string  `json:"unit"`
	Pass   bool    `json:"pass"`
}

// evaluate checks the targets that the run's cases measure.
func evaluate(results []CaseResult) []TargetEval {
	var out []TargetEval
	for _, r := range results {
		if r.Target != "service" || r.Ops == 0 {
			continue
		}
		switch {
		case r.Workload == wlRefresh && r.Concurrency == 64 && r.VsBare != nil:
			out = append(out, TargetEval{"refresh at 64 callers vs bare rotate", r.Name, ">= 0.70", r.VsBare.Ops, "ratio", r.VsBare.Ops >= 0.70})
		case r.Workload == wlIssue && r.Concurrency == 64 && r.VsBare != nil:
			out = append(out, TargetEval{"issue at 64 callers vs bare issue", r.Name, ">= 0.70", r.VsBare.Ops, "ratio", r.VsBare.Ops >= 0.70})
		}
		if r.Workload == wlRefresh && r.Concurrency == 64 {
			out = append(out, TargetEval{"refresh p99 at 64 callers", r.Name, "<= 15", r.Latency.P99, "ms", r.Latency.P99 <= 15})
		}
		if (r.Workload == wlRefresh || r.Workload == wlIssue) && r.Concurrency == 1 {
			out = append(out, TargetEval{"p99 at 1 caller", r.Name, "<= 1", r.Latency.P99, "ms", r.Latency.P99 <= 1})
		}
		if r.Workload == wlAged && r.VsFresh != nil {
			out = append(out, TargetEval{fmt.Sprintf("family with %d prior rotations vs fresh (throughput)", r.PriorRotations), r.Name, ">= 0.90", r.VsFresh.Ops, "ratio", r.VsFresh.Ops >= 0.90})
			out = append(out, TargetEval{fmt.Sprintf("family with %d prior rotations vs fresh (p50)", r.PriorRotations), r.Name, "<= 1.10", r.VsFresh.P50, "ratio", r.VsFresh.P50 <= 1.10})
		}
		if r.Workload == wlIntrospect && r.Concurrency == 64 {
			out = append(out, TargetEval{"introspection at 64 callers", r.Name, ">= 50000", r.OpsPerSec, "ops/s", r.OpsPerSec >= 50000})
		}
	}
	return out
}

// oneLine is a case's progress line.
func oneLine(r CaseResult) string {
	if r.Error != "" && r.Ops == 0 {
		return fmt.Sprintf("%s [%s]: %s", r.Name, r.Target, r.Error)
	}
	s := fmt.Sprintf("%s [%s]: %.0f ops/s p50 %.3f p99 %.3f max %.3f ms, %d errors",
		r.Name, r.Target, r.OpsPerSec, r.Latency.P50, r.Latency.P99, r.Latency.Max, r.Errors)
	if r.CPUPerOpUS != nil {
		s += fmt.Sprintf(", %.1f µs CPU/op", *r.CPUPerOpUS)
	}
	if r.VsBare != nil {
		s += fmt.Sprintf(", %.2f× %s", r.VsBare.Ops, r.VsBare.Against)
	}
	if r.VsFresh != nil {
		s += fmt.Sprintf(", %.2f× %s", r.VsFresh.Ops, r.VsFresh.Against)
	}
	return s
}

// WriteTable writes the report as the table `tokenledger bench` prints,
// with notes on noise, errors and profiles and the targets of issue 6.
func (rep *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "tokenledger bench: %s, %d CPUs, %s; %gs per case after %gs warm-up",
		rep.Target, rep.Host.CPUs, rep.Host.GoVersion, rep.Settings.DurationS, rep.Settings.WarmupS)
	if rep.Settings.Slices > 1 {
		fmt.Fprintf(w, ", each case and its bare pipeline in %d alternating slices", rep.Settings.Slices)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\ttarget\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\tCPU µs/op\tcores\tpeak RSS MiB\tvs bare ops/s\tvs bare p99\tvs bare CPU/op\tload cores\tother cores\t")
	for _, r := range rep.Results {
		if r.Error != "" && r.Ops == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t%d\t-\t-\t-\t-\t-\t-\t-\t-\t\n", r.Name, r.Target, r.Errors)
			continue
		}
		cpu, cores, rss := "-", "-", "-"
		if r.CPUPerOpUS != nil {
			cpu, cores = fmt.Sprintf("%.1f", *r.CPUPerOpUS), fmt.Sprintf("%.2f", *r.CPUCores)
		}
		if r.PeakRSSBytes > 0 {
			rss = fmt.Sprintf("%.0f", float64(r.PeakRSSBytes)/(1<<20))
		}
		vo, vp, vc := "-", "-", "-"
		if q := r.VsBare; q != nil {
			vo, vp = fmt.Sprintf("%.2f", q.Ops), fmt.Sprintf("%.2f", q.P99)
			if q.CPUPerOp != nil {
				vc = fmt.Sprintf("%.2f", *q.CPUPerOp)
			}
		}
		other := "-"
		if r.OtherCPUCores != nil {
			other = fmt.Sprintf("%.2f", *r.OtherCPUCores)
		}
		load := fmt.Sprintf("%.2f", r.LoadgenCPUCores)
		if r.SharedProcess {
			load = "(in cores)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Name, r.Target, r.OpsPerSec, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max,
			r.Errors, cpu, cores, rss, vo, vp, vc, load, other)
	}
	tw.Flush()

	fmt.Fprintln(w, "\ncores: CPU of the process under load; load cores: the load generator's; other cores: the rest of the machine (noise)")
	if slices.ContainsFunc(rep.Results, func(r CaseResult) bool { return r.SharedProcess }) {
		fmt.Fprintln(w, "in-process: the service, the bare pipeline and the load generator share this process, so CPU/op, cores and peak RSS are the whole process's")
	}
	var notes []string
	for _, r := range rep.Results {
		if r.OtherCPUCores != nil && *r.OtherCPUCores > 0.25 {
			notes = append(notes, fmt.Sprintf("%s [%s]: other programs used %.2f cores during the window: numbers are skewed", r.Name, r.Target, *r.OtherCPUCores))
		}
		if r.Error != "" {
			notes = append(notes, fmt.Sprintf("%s [%s]: %s", r.Name, r.Target, r.Error))
		}
		if len(r.ErrorsByCode) > 0 {
			notes = append(notes, fmt.Sprintf("%s [%s] errors: %s", r.Name, r.Target, codes(r.ErrorsByCode)))
		}
		for _, op := range slices.Sorted(maps.Keys(r.PerOp)) {
			o := r.PerOp[op]
			notes = append(notes, fmt.Sprintf("%s [%s] %s: %.0f ops/s p50 %.3f p99 %.3f ms, %d errors %s",
				r.Name, r.Target, op, o.OpsPerSec, o.Latency.P50, o.Latency.P99, o.Errors, codes(o.ErrorsByCode)))
		}
		if q := r.VsFresh; q != nil {
			notes = append(notes, fmt.Sprintf("%s [%s] vs %s: ops/s %.3f, p50 %.3f, p99 %.3f",
				r.Name, r.Target, q.Against, q.Ops, q.P50, q.P99))
		}
		if r.Profile != "" {
			notes = append(notes, fmt.Sprintf("%s [%s] CPU profile: %s", r.Name, r.Target, r.Profile))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets (issue 6):")
		for _, t := range rep.Targets {
			verdict := "FAIL"
			if t.Pass {
				verdict = "pass"
			}
			fmt.Fprintf(w, "  %-4s %s (%s): %.3g %s, want %s\n", verdict, t.Target, t.Case, t.Got, t.Unit, t.Want)
		}
	}
}

func codes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
