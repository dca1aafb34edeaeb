package app

import "runtime"

func goVersion() string { return runtime.Version() }
