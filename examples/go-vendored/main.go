// A web process in Go: answers on $PORT with a greeting from a vendored module.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"

	"example.com/greeting"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s (%s)\n", greeting.For("Go"), runtime.Version())
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
