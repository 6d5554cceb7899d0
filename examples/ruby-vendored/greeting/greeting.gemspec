# The app's vendored dependency, as a gem of its own: `gem build greeting.gemspec` made
# ../vendor/cache/greeting-1.0.0.gem, which Bundler installs with no registry.
Gem::Specification.new do |spec|
  spec.name = "greeting"
  spec.version = "1.0.0"
  spec.summary = "Says hello"
  spec.authors = ["dynod"]
  spec.license = "MIT"
  spec.files = ["lib/greeting.rb"]
  spec.required_ruby_version = ">= 3.0"
end
