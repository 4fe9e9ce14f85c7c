package shapes

import "math"

// Pi is the ratio of a circle's circumference to its diameter.
const Pi = math.Pi

// Square is a square with side S.
type Square struct {
	S float64
}

// Area returns the area of a circle of radius r.
func Area(r float64) float64 { return Pi * r * r }

// Scale multiplies the side.
func (s *Square) Scale(k float64) { s.S *= k }
