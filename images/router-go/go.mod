module sandboxrouter

go 1.26
