<?php
// Served by heroku-php-nginx: nginx hands .php requests to PHP-FPM.
require __DIR__ . '/vendor/autoload.php';

header('Content-Type: text/plain');
echo Hello\Greeting::for('PHP'), ' (PHP ', PHP_VERSION, ', ', PHP_SAPI, ")\n";
