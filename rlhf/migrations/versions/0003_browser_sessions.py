"""browsersession and userpreference: sign-ins that survive a reload, and the last project per account

A signed-in browser holds an HttpOnly cookie with a random token; the database keeps only its
SHA-256 (and the hash of the one-time handoff nonce that the page exchanges for the cookie), so
every app process behind a load balancer resolves the same sign-in (issue 16, item 10).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 09:07:43
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('browsersession',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('handoff_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('handoff_expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('via', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('handoff_hash'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('browsersession', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_browsersession_last_seen_at'), ['last_seen_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_browsersession_user_id'), ['user_id'], unique=False)

    op.create_table('userpreference',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('last_project_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['last_project_id'], ['project.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('userpreference')
    with op.batch_alter_table('browsersession', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_browsersession_user_id'))
        batch_op.drop_index(batch_op.f('ix_browsersession_last_seen_at'))

    op.drop_table('browsersession')
