"""python manage.py create_token USERNAME [--name N] [--days D]: print a new personal API token."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tracker.models import ApiToken


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it (the only time it is shown)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="a label for the token (default: 'command line')")
        parser.add_argument("--days", type=int, default=None, help="expire after this many days (default: never)")

    def handle(self, *args, username, name, days, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters")
        if days is not None and days <= 0:
            raise CommandError("--days must be a positive number")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        _token, raw = ApiToken.mint(user, name, expires_at=expires_at)
        self.stdout.write(raw)
