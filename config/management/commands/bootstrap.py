from django.core.management.base import BaseCommand

from config.bootstrap import ensure_admin_user, ensure_default_workspace, ensure_local_cluster


class Command(BaseCommand):
    help = "Create the first admin user (if none) and the default workspace."

    def handle(self, *args, **options):
        password = ensure_admin_user()
        workspace = ensure_default_workspace()
        if password:
            self.stdout.write(self.style.WARNING(f"Created admin user 'admin' with password: {password}  (shown once)"))
        cluster, created = ensure_local_cluster(workspace)
        self.stdout.write(f"workspace '{workspace.slug}' ready" + (f", cluster '{cluster.name}' created" if created else ""))
