"""-o table|json|yaml|value and -c column selection, for lists and single objects."""

import json

import click

FORMATS = ["table", "json", "yaml", "value"]


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(cell(item) for item in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def pick(row: dict, columns: list[str]) -> dict:
    return {column: row.get(column) for column in columns}


def selected(columns: tuple[str, ...] | None, default: list[str]) -> list[str] | None:
    chosen = [name for group in columns or () for name in group.split(",") if name]
    return chosen or None


def emit(data, fmt: str, columns: tuple[str, ...] | None = None, default: list[str] | None = None) -> None:
    """Print a list of objects or one object. -c limits the fields in every format; the table and
    value formats of a list show `default` columns unless -c says otherwise."""
    chosen = selected(columns, default or [])
    many = isinstance(data, list)
    if chosen:
        unknown = sorted({c for c in chosen for row in (data if many else [data]) if isinstance(row, dict)
                          and c not in row})
        if unknown:
            raise click.UsageError(f"No such column: {', '.join(unknown)}")
        data = [pick(row, chosen) for row in data] if many else pick(data, chosen)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml  # only when asked for

        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    elif fmt == "value":
        rows = data if many else [data]
        for row in rows:
            names = chosen or (default if many and default else list(row))
            click.echo("\t".join(cell(row.get(name)) for name in names))
    elif many:
        names = chosen or default or (list(data[0]) if data else [])
        table([[name.upper() for name in names]] + [[cell(row.get(name)) for name in names] for row in data])
    else:
        table([["FIELD", "VALUE"]] + [[name, cell(value)] for name, value in data.items()])


def table(lines: list[list[str]]) -> None:
    widths = [max(len(line[index]) for line in lines) for index in range(len(lines[0]))] if lines and lines[0] else []
    for line in lines:
        click.echo("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())
