;; A Leiningen app that needs only Clojure itself, which Debian packages into its Maven
;; repository: it builds with Clojars and Maven Central unreachable.
(defproject hello "1.0.0"
  :description "Hello from Clojure: the JDK's own HTTP server on $PORT"
  :dependencies [[org.clojure/clojure "1.12.0"]]
  :main hello.core
  :aot [hello.core]
  :uberjar-name "hello-standalone.jar")
