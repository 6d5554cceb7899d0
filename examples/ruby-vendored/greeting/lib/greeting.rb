module Greeting
  def self.for(name) = "Hello from #{name}"
end
