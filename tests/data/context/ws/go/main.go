package main

import (
	"fmt"

	"example.com/geo/shapes"
)

func main() {
	fmt.Println(shapes.Area(2))
}
