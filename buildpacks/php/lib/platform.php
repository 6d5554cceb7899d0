<?php
// php platform.php composer.json STACK_PHP_VERSION STACK: checks composer.json's require.php
// against the stack's PHP with Composer's own constraint parser (Debian's php-composer-semver,
// which the composer package brings). Prints require_php=<constraint>, or one error line.
[, $file, $have, $stack] = $argv;
$json = json_decode(file_get_contents($file), true);
if (!is_array($json)) {
    echo "Error: composer.json is not valid JSON (" . json_last_error_msg() . "); fix it and push again.";
    exit(1);
}
$constraint = $json['require']['php'] ?? '';
if (!is_string($constraint)) {
    echo "Error: composer.json's require.php must be a version constraint string, like \"^8.2\".";
    exit(1);
}
if ($constraint !== '') {
    $autoload = '/usr/share/php/Composer/Semver/autoload.php';
    if (!is_file($autoload)) {
        echo "Error: this stack ($stack) lacks Composer's version rules ($autoload); build on a stack with composer.";
        exit(1);
    }
    require $autoload;
    try {
        $ok = \Composer\Semver\Semver::satisfies($have, $constraint);
    } catch (\UnexpectedValueException $e) {
        echo "Error: composer.json's require.php '$constraint' is not a version constraint (" . $e->getMessage() . ").";
        exit(1);
    }
    if (!$ok) {
        echo "Error: composer.json requires php $constraint, but stack $stack has only PHP $have (no other PHP can be downloaded); widen the constraint and push again.";
        exit(1);
    }
}
echo "require_php=$constraint";
