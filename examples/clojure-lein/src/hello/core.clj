(ns hello.core
  "Answers every request with the Clojure version and the JVM's max heap (which the
  buildpack's JVM_OPTS size from the dyno's memory)."
  (:gen-class)
  (:import (com.sun.net.httpserver HttpHandler HttpServer)
           (java.net InetSocketAddress)))

(defn- answer []
  (format "Hello from Clojure %s (max heap %d MB)\n"
          (clojure-version) (quot (.maxMemory (Runtime/getRuntime)) (* 1024 1024))))

(defn -main [& _]
  (let [port (Integer/parseInt (or (System/getenv "PORT") "5000"))
        server (HttpServer/create (InetSocketAddress. port) 0)]
    (.createContext server "/"
                    (reify HttpHandler
                      (handle [_ exchange]
                        (let [body (.getBytes (answer) "UTF-8")]
                          (.sendResponseHeaders exchange 200 (alength body))
                          (with-open [out (.getResponseBody exchange)]
                            (.write out body))))))
    (.start server)
    (println "Listening on port" port)))
