package hello;

import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import org.apache.commons.lang3.StringUtils;

/** A web process built by Gradle: answers on $PORT with its heap limit, through a dependency. */
public final class Main {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv("PORT"));
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", exchange -> {
            long heapMb = Runtime.getRuntime().maxMemory() / (1024 * 1024);
            String greeting = StringUtils.capitalize("hello from Gradle");
            byte[] body = (greeting + " on Java " + Runtime.version().feature() + " (max heap " + heapMb + " MB)\n")
                    .getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        System.out.println("listening on " + port);
    }
}
