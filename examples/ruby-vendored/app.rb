# A web process in plain Ruby (socket from the standard library): answers on $PORT with a
# greeting from the vendored gem.
require "socket"
require "greeting"

server = TCPServer.new("0.0.0.0", Integer(ENV.fetch("PORT")))
$stdout.sync = true
puts "listening on #{ENV['PORT']}"
loop do
  client = server.accept
  Thread.new(client) do |conn|
    while (line = conn.gets) && line != "\r\n"; end
    body = "#{Greeting.for('Ruby')} (Ruby #{RUBY_VERSION}, Bundler #{Bundler::VERSION})\n"
    conn.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
    conn.close
  end
end
