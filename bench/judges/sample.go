package main

import (
	"math"
	"math/rand/v2"
)

// rng wraps a seeded PCG generator with the samplers the streams need.
// Every run has its own, seeded from (cell, scenario, run), so streams are
// identical for every judge and independent of scheduling.
type rng struct{ r *rand.Rand }

func newRNG(seed uint64) *rng {
	return &rng{r: rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+0x632be59bd9b4e019))}
}

func (g *rng) float() float64 { return g.r.Float64() }

// poissonSmall draws Poisson(mu) by inversion given expMinusMu = exp(-mu);
// cheap for small means (expected mu+1 steps).
func (g *rng) poissonSmall(mu, expMinusMu float64) uint64 {
	u := g.r.Float64()
	p := expMinusMu
	c := p
	k := uint64(0)
	for u > c {
		k++
		p *= mu / float64(k)
		c += p
		if p == 0 { // numerical tail: restart with a fresh uniform
			u, p, c, k = g.r.Float64(), expMinusMu, expMinusMu, 0
		}
	}
	return k
}

// ptrs holds the constants of Hörmann's transformed rejection with squeeze
// (PTRS, 1993) for one Poisson mean >= 10, so that repeated draws with the
// same mean skip the set-up.
type ptrs struct {
	mu, logMu, a, b, logInvAlpha, vr float64
}

func newPTRS(mu float64) ptrs {
	slam := math.Sqrt(mu)
	b := 0.931 + 2.53*slam
	return ptrs{
		mu:          mu,
		logMu:       math.Log(mu),
		a:           -0.059 + 0.02483*b,
		b:           b,
		logInvAlpha: math.Log(1.1239 + 1.1328/(b-3.4)),
		vr:          0.9277 - 3.6224/(b-2),
	}
}

func (g *rng) poissonPTRS(c *ptrs) uint64 {
	for {
		u := g.r.Float64() - 0.5
		v := g.r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*c.a/us+c.b)*u + c.mu + 0.43)
		if us >= 0.07 && v <= c.vr {
			return uint64(k)
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+c.logInvAlpha-math.Log(c.a/(us*us)+c.b) <= -c.mu+k*c.logMu-lg {
			return uint64(k)
		}
	}
}

// poisson draws Poisson(mu): inversion below 10, PTRS otherwise.
func (g *rng) poisson(mu float64) uint64 {
	if mu <= 0 {
		return 0
	}
	if mu < 10 {
		return g.poissonSmall(mu, math.Exp(-mu))
	}
	c := newPTRS(mu)
	return g.poissonPTRS(&c)
}

// binomial draws Binomial(n, p) exactly by inversion over the support
// ordered outwards from the mode (m, m+1, m-1, m+2, ...), which costs
// O(sqrt(n p q)) steps after three log-gamma evaluations.
func (g *rng) binomial(n uint64, p float64) uint64 {
	if n == 0 || p <= 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	nf := float64(n)
	if nf*p < 12 {
		// inversion from 0
		q := 1 - p
		r := p / q
		p0 := math.Exp(nf * math.Log1p(-p))
		if p0 > 0 {
			for {
				u := g.r.Float64()
				pk, c, k := p0, p0, 0.0
				for u > c && k < nf {
					pk *= (nf - k) / (k + 1) * r
					k++
					c += pk
				}
				if u <= c {
					return uint64(k)
				}
			}
		}
	}
	m := math.Floor((nf + 1) * p)
	if m > nf {
		m = nf
	}
	ln, _ := math.Lgamma(nf + 1)
	lm, _ := math.Lgamma(m + 1)
	lnm, _ := math.Lgamma(nf - m + 1)
	pm := math.Exp(ln - lm - lnm + m*math.Log(p) + (nf-m)*math.Log1p(-p))
	r := p / (1 - p)
	for {
		u := g.r.Float64() - pm
		if u <= 0 {
			return uint64(m)
		}
		up, down := m, m
		pu, pd := pm, pm
		for pu > 0 || pd > 0 {
			if up < nf {
				pu *= (nf - up) / (up + 1) * r
				up++
				u -= pu
				if u <= 0 {
					return uint64(up)
				}
			} else {
				pu = 0
			}
			if down > 0 {
				pd *= down / (nf - down + 1) / r
				down--
				u -= pd
				if u <= 0 {
					return uint64(down)
				}
			} else {
				pd = 0
			}
		}
		// rounding left u > 0 after the whole support: draw again
	}
}

// geometric draws a size >= 1 with the given mean (>= 1).
func (g *rng) geometric(mean float64) uint64 {
	if mean <= 1 {
		return 1
	}
	// P(K > k) = (1-1/mean)^k
	u := g.r.Float64()
	for u == 0 {
		u = g.r.Float64()
	}
	return 1 + uint64(math.Floor(math.Log(u)/math.Log1p(-1/mean)))
}

func (g *rng) normal() float64 { return g.r.NormFloat64() }
