<?php

namespace Hello;

final class Greeting
{
    public static function for(string $name): string
    {
        return "Hello from $name";
    }
}
