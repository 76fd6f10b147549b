// Command tool is a fixture of the compose checker's tests.
package main

import (
	"flag"
	"fmt"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7000", "listen address")
	verbose := flag.Bool("verbose", false, "log more")
	flag.Parse()
	fmt.Println(helper(*listen, *verbose))
}
