from django.core.management.base import BaseCommand

from jobs.supervisor import Supervisor


class Command(BaseCommand):
    help = "Scale the worker nodes of local clusters (min..max, idle timeout) and run the reconciler."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between scaling passes")

    def handle(self, *args, **options):
        supervisor = Supervisor(interval=options["interval"], log=lambda message: self.stdout.write(message))
        self.stdout.write("supervisor running (Ctrl-C stops it and its workers)")
        supervisor.run_forever()
        self.stdout.write("supervisor stopped")
