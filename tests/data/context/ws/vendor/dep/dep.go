package dep
func Vendored() {}
