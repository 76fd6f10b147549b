package judge

import (
	"math"
	"math/rand/v2"
)

// stream generates per-second rows for tests: Poisson requests, errors with
// an optional cluster structure, and optional slow-request counts.
type stream struct {
	rng *rand.Rand
	// requests per second
	cand, base float64
	// error rates
	candErr, baseErr float64
	// errors arrive in clusters with geometric sizes of this mean (1 = none)
	clusterMean float64
	// slow-request rate of the baseline for each threshold and the
	// candidate's multiple of it
	slowRate  []float64
	slowRatio float64
}

func newStream(seed uint64) *stream {
	return &stream{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clusterMean: 1, slowRatio: 1}
}

// poisson draws a Poisson variate by inversion, splitting large means.
func (s *stream) poisson(mu float64) uint64 {
	var n uint64
	for mu > 0 {
		m := math.Min(mu, 30)
		mu -= m
		u := s.rng.Float64()
		p := math.Exp(-m)
		c := p
		k := uint64(0)
		for u > c && k < 1000 {
			k++
			p *= m / float64(k)
			c += p
		}
		n += k
	}
	return n
}

// geometric draws a size >= 1 with the given mean.
func (s *stream) geometric(mean float64) uint64 {
	if mean <= 1 {
		return 1
	}
	p := 1 / mean
	k := uint64(1)
	for s.rng.Float64() >= p {
		k++
	}
	return k
}

// errors draws the errors of n requests at the given rate, in clusters.
func (s *stream) errors(n uint64, rate float64) uint64 {
	k := s.poisson(float64(n) * rate / s.clusterMean)
	var e uint64
	for i := uint64(0); i < k; i++ {
		e += s.geometric(s.clusterMean)
	}
	return min(e, n)
}

func (s *stream) row(sec int64, commonMult float64) Row {
	nc, nb := s.poisson(s.cand), s.poisson(s.base)
	r := Row{
		Second:    sec,
		Candidate: Counts{Requests: nc, Errors: s.errors(nc, s.candErr*commonMult)},
		Baseline:  Counts{Requests: nb, Errors: s.errors(nb, s.baseErr*commonMult)},
	}
	for _, q := range s.slowRate {
		r.Candidate.Slow = append(r.Candidate.Slow, min(s.poisson(float64(nc)*q*s.slowRatio), nc))
		r.Baseline.Slow = append(r.Baseline.Slow, min(s.poisson(float64(nb)*q), nb))
	}
	return r
}
